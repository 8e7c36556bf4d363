/* creditd operator console: /console
 *
 *   sign in       an API key, checked with one read, kept in sessionStorage (this tab only;
 *                 never in a URL); sign out forgets it and removes every customer's data
 *   find          GET /api/v1/customers (paged, `search=` when the server has it; otherwise
 *                 exact matches on id, email and name)
 *   pick          GET /api/v1/customers/{id}; the six widgets with
 *                 Creditd.configure({apiKey, customerId, resourceId}); the picked customer
 *                 (not the key) is kept in the address's fragment: #customer=…&resource=…
 *   grant         POST /api/v1/credits/grants with an Idempotency-Key (a retry of the same
 *                 form reuses it, so a double submit or a lost answer never grants twice)
 *   void          GET /api/v1/credits/grants lists them (the grants widget reads only: it
 *                 has no actions), each voidable one with a Void button; POST
 *                 …/grants/{id}/void after a confirmation dialog
 * After a grant or a void the widgets are told to refresh (refreshWidgets).
 *
 * Errors are the API's `{statusCode, code, message, field}`: the message is shown next to
 * the form control the field names (aria-invalid, focus), or above the form otherwise.
 * Amounts are kept as the decimal strings the API sent (numbers are read as strings, see
 * parseJson); the only arithmetic, remaining = amount − consumed, is exact (BigInt).
 * Every string from the server is written with textContent; no inline script or handler.
 */
(function () {
  "use strict";

  var KEY_STORAGE = "creditd.console.apiKey";
  var CUSTOMERS_PAGE = 20;
  var LIST_PAGE = 100;
  var LIST_PAGES_MAX = 10;   // grants and currencies: at most 1,000 of each are listed
  var DECIMALS = 5;
  var WIDGET_TAGS = ["creditd-balance", "creditd-utilization", "creditd-usage-chart",
                     "creditd-grants", "creditd-ledger", "creditd-auto-recharge"];
  var VOIDABLE = { ACTIVE: true, SCHEDULED: true, PAYMENT_PENDING: true };

  // The grant body's fields (wire names, as an error's `field` gives them) → form control.
  var GRANT_FIELDS = {
    currencyId: "grant-currency",
    amount: "grant-amount",
    grantType: "grant-type",
    priority: "grant-priority",
    displayName: "grant-reason",
    effectiveAt: "grant-effective-at",
    expireAt: "grant-expire-at",
    "cost.amount": "grant-cost-amount",
    "cost.currency": "grant-cost-currency",
    cost: "grant-cost-amount",
    comment: "grant-comment",
    resourceId: "grant-resource"
  };
  var FIELD_LABELS = {
    currencyId: "Credit type", amount: "Amount", grantType: "Type", priority: "Priority",
    displayName: "Reason", effectiveAt: "Effective from", expireAt: "Expires",
    "cost.amount": "Cost", "cost.currency": "Cost currency", cost: "Cost",
    comment: "Comment", resourceId: "Resource", customerId: "Customer",
    "Idempotency-Key": "Idempotency key", "X-API-KEY": "API key"
  };

  var state = {
    apiKey: null,
    customers: { query: "", page: 1, next: null, prev: null, seq: 0 },
    customer: null,          // the picked customer's document
    resourceId: null,
    currencies: [],
    grants: [],
    grantsSeq: 0,
    pendingGrant: null,      // {key, body}: the last grant sent without a definite answer
    voiding: null            // the grant the dialog asks about
  };
  var $ = {};

  document.addEventListener("DOMContentLoaded", init);

  function init() {
    [
      "console", "announcer", "session-bar", "sign-out", "sign-in", "sign-in-form", "api-key",
      "api-key-error", "sign-in-button", "workspace", "customer-search-form", "customer-search",
      "customer-search-button", "customer-list-status", "customer-list-error", "customer-list",
      "customers-prev", "customers-next", "customer-empty", "customer-error", "customer",
      "customer-title", "customer-id", "customer-email", "customer-email-row",
      "customer-archived-row", "resource-form", "resource-id", "customer-widgets",
      "widgets-template", "grant-form", "grant-message", "grant-currency", "grant-amount",
      "grant-priority", "grant-reason", "grant-effective-at", "grant-effective-at-utc",
      "grant-expire-at", "grant-expire-at-utc", "grant-timezone", "grant-cost-amount",
      "grant-cost-currency", "grant-comment", "grant-resource", "grant-await-payment",
      "grant-submit", "grants-reload", "grants-message", "grants-status", "grants-body",
      "grants-caption", "void-dialog", "void-text", "void-confirm", "void-cancel"
    ].forEach(function (id) { $[id] = document.getElementById(id); });

    $["sign-in-form"].addEventListener("submit", onSignIn);
    $["sign-out"].addEventListener("click", function () { signOut(); });
    $["customer-search-form"].addEventListener("submit", function (event) {
      event.preventDefault();
      loadCustomers({ query: $["customer-search"].value.trim() });
    });
    $["customers-next"].addEventListener("click", function () {
      loadCustomers({ query: state.customers.query, after: state.customers.next,
                      page: state.customers.page + 1 });
    });
    $["customers-prev"].addEventListener("click", function () {
      loadCustomers({ query: state.customers.query, before: state.customers.prev,
                      page: Math.max(1, state.customers.page - 1) });
    });
    $["customer-list"].addEventListener("click", function (event) {
      var row = event.target.closest("[data-customer-id]");
      if (row) pickCustomer(row.getAttribute("data-customer-id"), state.resourceId);
    });
    $["resource-form"].addEventListener("submit", function (event) {
      event.preventDefault();
      if (state.customer) pickCustomer(state.customer.id, $["resource-id"].value.trim() || null);
    });
    $["grant-form"].addEventListener("submit", onGrant);
    $["grant-form"].addEventListener("reset", function () {
      // After the browser has reset the controls.
      window.setTimeout(function () { resetGrantForm(false); }, 0);
    });
    $["grant-form"].addEventListener("input", function (event) {
      var target = event.target;
      if (target === $["grant-effective-at"] || target === $["grant-expire-at"]) showUtc(target);
      clearFieldError(target.type === "radio" ? document.getElementById("grant-type") : target);
    });
    $["grants-reload"].addEventListener("click", function () { loadGrants(); });
    $["grants-body"].addEventListener("click", function (event) {
      var button = event.target.closest("[data-void-grant]");
      if (button) askVoid(button.getAttribute("data-void-grant"), button);
    });
    $["void-confirm"].addEventListener("click", confirmVoid);
    $["void-cancel"].addEventListener("click", function () { closeVoidDialog(); });
    $["void-dialog"].addEventListener("close", function () { afterVoidDialog(); });
    window.addEventListener("hashchange", function () {
      if (!state.apiKey) return;
      var wanted = fromHash();
      if (wanted.customerId && (!state.customer || wanted.customerId !== state.customer.id ||
                                wanted.resourceId !== state.resourceId)) {
        pickCustomer(wanted.customerId, wanted.resourceId);
      }
    });

    $["grant-timezone"].textContent = timezoneText();

    var saved = null;
    try { saved = window.sessionStorage.getItem(KEY_STORAGE); } catch (e) { saved = null; }
    if (saved) {
      signIn(saved, true);
    } else {
      showSignIn();
    }
  }

  // ---- API ---------------------------------------------------------------------------------

  function ApiError(status, code, message, field, retryAfter) {
    this.status = status;
    this.code = code;
    this.message = message;
    this.field = field;
    this.retryAfter = retryAfter;
  }

  /* One call with the signed-in key. Resolves to the parsed body (numbers as strings);
   * rejects with an ApiError (status 0: the server could not be reached). */
  function api(method, path, options) {
    options = options || {};
    var url = new URL(path, window.location.origin);
    var query = options.query || {};
    Object.keys(query).forEach(function (name) {
      var value = query[name];
      if (value !== null && value !== undefined && value !== "") url.searchParams.set(name, String(value));
    });
    var headers = { "Accept": "application/json", "X-API-KEY": options.apiKey || state.apiKey || "" };
    if (options.body !== undefined) headers["Content-Type"] = "application/json";
    if (options.idempotencyKey) headers["Idempotency-Key"] = options.idempotencyKey;
    return fetch(url.toString(), {
      method: method,
      headers: headers,
      body: options.body === undefined ? undefined : JSON.stringify(options.body),
      cache: "no-store",
      credentials: "omit"
    }).then(function (res) {
      return res.text().then(function (text) {
        var body = null;
        try { body = text ? parseJson(text) : null; } catch (e) { body = null; }
        if (res.ok) return body || {};
        var error = new ApiError(
          res.status,
          body && typeof body.code === "string" ? body.code : "HTTP" + res.status,
          body && typeof body.message === "string" ? body.message : (res.statusText || "the request failed"),
          body && typeof body.field === "string" ? body.field : null,
          res.headers.get("Retry-After"));
        if (res.status === 401 && !options.apiKey && state.apiKey) {
          signOut("Your API key is no longer accepted. Sign in again.");
        }
        throw error;
      });
    }, function () {
      throw new ApiError(0, "NetworkError", "the server could not be reached", null, null);
    });
  }

  /* Every page of a list (at most LIST_PAGES_MAX): {items, more}. */
  function listAll(path, query) {
    var items = [];
    function next(after, pages) {
      var q = Object.assign({}, query, { limit: LIST_PAGE, after: after });
      return api("GET", path, { query: q }).then(function (body) {
        items = items.concat(Array.isArray(body.data) ? body.data : []);
        var cursor = body.pagination && body.pagination.next;
        if (cursor && pages + 1 < LIST_PAGES_MAX) return next(cursor, pages + 1);
        return { items: items, more: !!cursor };
      });
    }
    return next(null, 0);
  }

  function errorText(error) {
    if (!(error instanceof ApiError)) return "Something went wrong: " + String(error && error.message || error);
    if (error.status === 0) return "The server could not be reached. Check your connection and try again.";
    var text = error.message;
    if (error.field) text = (FIELD_LABELS[error.field] || error.field) + ": " + text;
    text += " (" + error.code + ")";
    if (error.status === 429 || error.status === 503) {
      text += error.retryAfter ? " — try again in " + error.retryAfter + " s." : " — try again shortly.";
    }
    return text;
  }

  // ---- sign in / out -----------------------------------------------------------------------

  function showSignIn(message) {
    $["console"].setAttribute("data-state", "signed-out");
    $["workspace"].hidden = true;
    $["session-bar"].hidden = true;
    $["sign-in"].hidden = false;
    $["api-key"].value = "";
    setFieldError($["api-key"], $["api-key-error"], message || "");
    $["api-key"].focus();
  }

  function onSignIn(event) {
    event.preventDefault();
    var key = $["api-key"].value.trim();
    if (!key) {
      setFieldError($["api-key"], $["api-key-error"], "Enter an API key.");
      $["api-key"].focus();
      return;
    }
    signIn(key, false);
  }

  /* Checks the key with one cheap read before keeping it. */
  function signIn(key, restoring) {
    $["sign-in-button"].disabled = true;
    $["console"].setAttribute("data-state", "signing-in");
    setFieldError($["api-key"], $["api-key-error"], "");
    api("GET", "/api/v1/customers", { query: { limit: 1 }, apiKey: key }).then(function () {
      state.apiKey = key;
      try { window.sessionStorage.setItem(KEY_STORAGE, key); } catch (e) { /* memory only */ }
      $["api-key"].value = "";
      $["sign-in"].hidden = true;
      $["session-bar"].hidden = false;
      $["workspace"].hidden = false;
      $["console"].setAttribute("data-state", "signed-in");
      announce("Signed in.");
      loadCurrencies();
      var wanted = fromHash();
      loadCustomers({ query: "" });
      if (wanted.customerId) {
        pickCustomer(wanted.customerId, wanted.resourceId);
      } else {
        showNoCustomer();
      }
      if (!restoring || !wanted.customerId) $["customer-search"].focus();
    }, function (error) {
      forgetKey();
      var message = error.status === 401 || error.status === 403
        ? "This API key was not accepted."
        : errorText(error);
      showSignIn(restoring && error.status === 401 ? "Your saved API key is no longer accepted. Sign in again." : message);
    }).then(function () {
      $["sign-in-button"].disabled = false;
    });
  }

  function forgetKey() {
    state.apiKey = null;
    try { window.sessionStorage.removeItem(KEY_STORAGE); } catch (e) { /* nothing kept */ }
  }

  function signOut(message) {
    forgetKey();
    state.customer = null;
    state.resourceId = null;
    state.currencies = [];
    state.grants = [];
    state.pendingGrant = null;
    state.customers = { query: "", page: 1, next: null, prev: null, seq: state.customers.seq + 1 };
    state.grantsSeq += 1;
    removeWidgets();
    if (window.Creditd && typeof window.Creditd.configure === "function") {
      window.Creditd.configure({ apiKey: null, customerId: null, resourceId: null });
    }
    if ($["void-dialog"].open) $["void-dialog"].close();
    clear($["customer-list"]);
    clear($["grants-body"]);
    clear($["grant-currency"]);
    $["customer-search"].value = "";
    $["customer-list-status"].textContent = "";
    $["customer-list-error"].textContent = "";
    $["customer-error"].textContent = "";
    $["grant-message"].textContent = "";
    $["grants-message"].textContent = "";
    $["customer"].hidden = true;
    history.replaceState(null, "", window.location.pathname + window.location.search);
    announce(message || "Signed out.");
    showSignIn(message);
  }

  // ---- customers ---------------------------------------------------------------------------

  /* A page of customers: `search=` keeps those whose id, name or email starts with it
   * (ignoring case). A server without it (older than the console) ignores the parameter
   * and answers customers that do not match: then the exact matches are shown instead
   * (GET /customers/{id}, ?email=, ?name=). */
  function loadCustomers(options) {
    var query = options.query || "";
    var seq = ++state.customers.seq;
    $["customer-list-error"].textContent = "";
    $["customer-list-status"].textContent = "Loading customers…";
    $["customer-list"].setAttribute("aria-busy", "true");
    api("GET", "/api/v1/customers", {
      query: { limit: CUSTOMERS_PAGE, search: query || null, after: options.after, before: options.before }
    }).then(function (body) {
      var items = Array.isArray(body.data) ? body.data : [];
      var pagination = body.pagination || {};
      if (query && !items.every(function (c) { return matches(c, query); })) {
        return exactMatches(query, items).then(function (found) {
          return { items: found, next: null, prev: null, exact: true };
        });
      }
      return { items: items, next: pagination.next || null, prev: pagination.prev || null, exact: false };
    }).then(function (result) {
      if (seq !== state.customers.seq) return;
      state.customers.query = query;
      state.customers.page = options.page || 1;
      state.customers.next = result.next;
      state.customers.prev = result.prev;
      renderCustomers(result.items);
      $["customers-next"].disabled = !result.next;
      $["customers-prev"].disabled = !result.prev;
      var count = result.items.length;
      var text;
      if (!count) {
        text = query ? "No customer matches “" + query + "”." : "No customers yet.";
      } else if (result.exact) {
        text = count + (count === 1 ? " exact match" : " exact matches") + " for “" + query + "”.";
      } else {
        text = (query ? "Customers matching “" + query + "”" : "Customers") + ", page " +
          state.customers.page + ": " + count + " shown.";
      }
      $["customer-list-status"].textContent = text;
    }, function (error) {
      if (seq !== state.customers.seq) return;
      $["customer-list-status"].textContent = "";
      $["customer-list-error"].textContent = "Customers could not be listed. " + errorText(error);
    }).then(function () {
      $["customer-list"].removeAttribute("aria-busy");
    });
  }

  function matches(customer, query) {
    var q = query.toLowerCase();
    return ["id", "name", "email"].some(function (key) {
      return typeof customer[key] === "string" && customer[key].toLowerCase().indexOf(q) >= 0;
    });
  }

  function exactMatches(query, page) {
    var lookups = [
      api("GET", "/api/v1/customers/" + encodeURIComponent(query)).then(function (body) {
        return body.data ? [body.data] : [];
      }, none),
      api("GET", "/api/v1/customers", { query: { name: query, limit: CUSTOMERS_PAGE } }).then(data, none)
    ];
    if (query.indexOf("@") >= 0) {
      lookups.push(api("GET", "/api/v1/customers", { query: { email: query, limit: CUSTOMERS_PAGE } }).then(data, none));
    }
    return Promise.all(lookups).then(function (lists) {
      var seen = {};
      var out = [];
      lists.concat([page.filter(function (c) { return matches(c, query); })]).forEach(function (list) {
        list.forEach(function (c) {
          if (c && typeof c.id === "string" && !seen[c.id]) { seen[c.id] = true; out.push(c); }
        });
      });
      return out;
    });
    function data(body) { return Array.isArray(body.data) ? body.data : []; }
    function none(error) {
      if (error.status === 404 || error.status === 400) return [];
      throw error;
    }
  }

  function renderCustomers(items) {
    var list = $["customer-list"];
    clear(list);
    items.forEach(function (customer) {
      var button = el("button", {
        type: "button", "class": "customer-row", "data-testid": "customer-row",
        "data-customer-id": customer.id,
        "aria-pressed": state.customer && state.customer.id === customer.id ? "true" : "false"
      });
      button.appendChild(el("span", { "class": "customer-row__name" }, customer.name || customer.id));
      var meta = el("span", { "class": "customer-row__meta" });
      meta.appendChild(el("span", { "class": "mono" }, customer.id));
      if (customer.email) meta.appendChild(document.createTextNode(" · " + customer.email));
      if (customer.archivedAt) {
        meta.appendChild(document.createTextNode(" "));
        meta.appendChild(el("span", { "class": "tag" }, "archived"));
      }
      button.appendChild(meta);
      var item = el("li");
      item.appendChild(button);
      list.appendChild(item);
    });
  }

  function markPicked() {
    Array.prototype.forEach.call($["customer-list"].querySelectorAll("[data-customer-id]"), function (row) {
      var picked = !!state.customer && row.getAttribute("data-customer-id") === state.customer.id;
      row.setAttribute("aria-pressed", picked ? "true" : "false");
    });
  }

  // ---- the picked customer -----------------------------------------------------------------

  function pickCustomer(customerId, resourceId) {
    $["customer-error"].textContent = "";
    return api("GET", "/api/v1/customers/" + encodeURIComponent(customerId)).then(function (body) {
      var customer = body.data;
      var changed = !state.customer || state.customer.id !== customer.id;
      state.customer = customer;
      state.resourceId = resourceId || null;
      writeHash();
      $["customer-empty"].hidden = true;
      $["customer"].hidden = false;
      $["customer-title"].textContent = customer.name || customer.id;
      $["customer-id"].textContent = customer.id;
      $["customer-email"].textContent = customer.email || "";
      $["customer-email-row"].hidden = !customer.email;
      $["customer-archived-row"].hidden = !customer.archivedAt;
      $["resource-id"].value = state.resourceId || "";
      markPicked();
      showWidgets();
      if (changed) {
        resetGrantForm(true);
        $["grants-message"].textContent = "";
      }
      $["grant-resource"].value = state.resourceId || "";
      loadGrants();
      announce("Showing " + (customer.name || customer.id) +
               (state.resourceId ? ", resource " + state.resourceId : "") + ".");
    }, function (error) {
      $["customer-error"].textContent = (error.status === 404
        ? "No customer “" + customerId + "”."
        : "The customer could not be loaded. " + errorText(error));
      if (!state.customer) showNoCustomer();
    });
  }

  function showNoCustomer() {
    $["customer"].hidden = true;
    $["customer-empty"].hidden = false;
  }

  function showWidgets() {
    var Creditd = window.Creditd;
    if (!Creditd || typeof Creditd.configure !== "function") {
      $["customer-error"].textContent = "The widgets could not be loaded (creditd.js). Reload the page to try again.";
      return;
    }
    Creditd.configure({
      apiKey: state.apiKey,
      token: null,
      customerId: state.customer.id,
      resourceId: state.resourceId
    });
    if (!$["customer-widgets"].firstElementChild) {
      $["customer-widgets"].appendChild($["widgets-template"].content.cloneNode(true));
    }
  }

  function removeWidgets() {
    clear($["customer-widgets"]);
  }

  /* Tell the widgets that the customer's data changed (they also hear it from the live
   * feed, a moment later). creditd.js gives each element `reload(quiet)`: quiet keeps what
   * is shown until the new data is there. Without it, configure({}) reloads them all. */
  function refreshWidgets() {
    var Creditd = window.Creditd;
    var reloaded = false;
    WIDGET_TAGS.forEach(function (tag) {
      Array.prototype.forEach.call($["customer-widgets"].querySelectorAll(tag), function (widget) {
        if (typeof widget.refresh === "function") widget.refresh();
        else if (typeof widget.reload === "function") widget.reload(true);
        else return;
        reloaded = true;
      });
    });
    if (!reloaded && Creditd && typeof Creditd.configure === "function") Creditd.configure({});
  }

  function fromHash() {
    var params = new URLSearchParams(window.location.hash.replace(/^#/, ""));
    return { customerId: params.get("customer") || null, resourceId: params.get("resource") || null };
  }

  function writeHash() {
    var params = new URLSearchParams();
    params.set("customer", state.customer.id);
    if (state.resourceId) params.set("resource", state.resourceId);
    var hash = "#" + params.toString();
    if (window.location.hash !== hash) {
      history.replaceState(null, "", window.location.pathname + window.location.search + hash);
    }
  }

  // ---- currencies --------------------------------------------------------------------------

  function loadCurrencies() {
    var select = $["grant-currency"];
    clear(select);
    select.appendChild(el("option", { value: "" }, "Loading…"));
    return listAll("/api/v1/credits/custom-currencies", { status: "ACTIVE" }).then(function (result) {
      state.currencies = result.items.filter(function (c) { return !c.archivedAt; });
      clear(select);
      if (!state.currencies.length) {
        select.appendChild(el("option", { value: "" }, "No credit type yet"));
        setFieldError(select, $["grant-currency"].parentNode.querySelector(".field-error"),
          "Create a credit type first (POST /api/v1/credits/custom-currencies).");
        return;
      }
      select.appendChild(el("option", { value: "" }, "Choose a credit type"));
      state.currencies.forEach(function (c) {
        var label = c.displayName && c.displayName !== c.id ? c.displayName + " (" + c.id + ")" : c.id;
        select.appendChild(el("option", { value: c.id }, label));
      });
      if (state.currencies.length === 1) select.value = state.currencies[0].id;
    }, function (error) {
      clear(select);
      select.appendChild(el("option", { value: "" }, "Credit types could not be loaded"));
      setFieldError(select, document.getElementById("grant-currency-error"), errorText(error));
    });
  }

  function currencyName(id, amount) {
    var currency = null;
    state.currencies.forEach(function (c) { if (c.id === id) currency = c; });
    if (currency && currency.units) {
      var one = amount === "1" || amount === "-1";
      var unit = one ? currency.units.singular : currency.units.plural;
      if (unit) return unit;
    }
    return currency && currency.displayName ? currency.displayName : id;
  }

  // ---- grant ---------------------------------------------------------------------------------

  function resetGrantForm(all) {
    clearFormErrors();
    if (all) {
      $["grant-form"].reset();
      $["grant-message"].textContent = "";
      $["grant-message"].removeAttribute("data-kind");
    }
    if (state.currencies.length === 1) $["grant-currency"].value = state.currencies[0].id;
    $["grant-resource"].value = state.resourceId || "";
    showUtc($["grant-effective-at"]);
    showUtc($["grant-expire-at"]);
    state.pendingGrant = null;
  }

  function onGrant(event) {
    event.preventDefault();
    if (!state.customer) return;
    clearFormErrors();
    var built = grantBody();
    if (built.errors.length) {
      built.errors.forEach(function (e) { showFieldError(e.field, e.message); });
      message($["grant-message"], "error", "Check the highlighted fields.");
      focusField(built.errors[0].field);
      return;
    }
    var body = built.body;
    var serialized = JSON.stringify(body);
    // The same form sent again after no definite answer (network error, 429, 5xx) is the
    // same grant: the key is reused and the server applies it at most once.
    if (!state.pendingGrant || state.pendingGrant.body !== serialized) {
      state.pendingGrant = { key: uuid(), body: serialized };
    }
    var key = state.pendingGrant.key;
    var customer = state.customer;
    $["grant-submit"].disabled = true;
    $["grant-submit"].setAttribute("aria-busy", "true");
    message($["grant-message"], "info", "Granting…");
    api("POST", "/api/v1/credits/grants", { body: body, idempotencyKey: key }).then(function (answer) {
      state.pendingGrant = null;
      var grant = answer.data || {};
      var text = "Granted " + grant.amount + " " + currencyName(grant.currencyId, grant.amount) +
        " to " + (customer.name || customer.id) + " — " + statusLabel(grant.status) + " (grant " + grant.id + ").";
      resetGrantForm(true);
      message($["grant-message"], "success", text);
      announce(text);
      loadGrants();
      refreshWidgets();
    }, function (error) {
      var definite = error.status >= 400 && error.status < 500 && error.status !== 429 && error.status !== 408;
      if (definite) state.pendingGrant = null;
      var target = error.field && GRANT_FIELDS[error.field];
      if (target) {
        showFieldError(error.field, error.message + " (" + error.code + ")");
        focusField(error.field);
      }
      message($["grant-message"], "error", definite
        ? "The grant was not made. " + errorText(error)
        : "No answer about the grant. " + errorText(error) +
          " Sending the same form again is safe: the grant is made at most once.");
    }).then(function () {
      $["grant-submit"].disabled = false;
      $["grant-submit"].removeAttribute("aria-busy");
    });
  }

  /* The request body from the form, or the fields that cannot be sent as they are. Only
   * what the form cannot express is checked here (empty required fields, unreadable
   * dates); the server checks everything else and its error is shown the same way. */
  function grantBody() {
    var errors = [];
    var body = { customerId: state.customer.id };
    var currencyId = $["grant-currency"].value;
    if (!currencyId) errors.push({ field: "currencyId", message: "Choose a credit type." });
    else body.currencyId = currencyId;

    var amount = $["grant-amount"].value.trim();
    if (!amount) errors.push({ field: "amount", message: "Enter an amount." });
    else body.amount = amount;   // a decimal string: the server reads it exactly

    var type = $["grant-form"].querySelector("input[name=grantType]:checked");
    if (!type) errors.push({ field: "grantType", message: "Choose paid or promotional." });
    else body.grantType = type.value;

    var priority = $["grant-priority"].value.trim();
    if (priority === "") {
      if ($["grant-priority"].validity.badInput) errors.push({ field: "priority", message: "Enter a whole number from 0 to 100." });
    } else {
      body.priority = /^-?\d+$/.test(priority) ? parseInt(priority, 10) : Number(priority);
    }

    var reason = $["grant-reason"].value.trim();
    if (!reason) errors.push({ field: "displayName", message: "Enter a reason." });
    else body.displayName = reason;

    [["effectiveAt", $["grant-effective-at"]], ["expireAt", $["grant-expire-at"]]].forEach(function (pair) {
      var input = pair[1];
      if (!input.value) {
        if (input.validity.badInput) errors.push({ field: pair[0], message: "Enter a complete date and time." });
        return;
      }
      var iso = localToIso(input.value);
      if (!iso) errors.push({ field: pair[0], message: "Enter a complete date and time." });
      else body[pair[0]] = iso;
    });

    var costAmount = $["grant-cost-amount"].value.trim();
    var costCurrency = $["grant-cost-currency"].value.trim();
    if (costAmount) {
      body.cost = { amount: costAmount, currency: costCurrency || "usd" };
    }

    var comment = $["grant-comment"].value.trim();
    if (comment) body.comment = comment;
    var resource = $["grant-resource"].value.trim();
    if (resource) body.resourceId = resource;
    if ($["grant-await-payment"].checked) body.awaitPaymentConfirmation = true;
    return { body: body, errors: errors };
  }

  function showUtc(input) {
    var output = document.getElementById(input.id + "-utc");
    if (!output) return;
    if (!input.value) {
      output.textContent = input === $["grant-effective-at"] ? "Now" : "Never";
      return;
    }
    var iso = localToIso(input.value);
    output.textContent = iso ? iso.replace(".000Z", "Z").replace("T", " ").replace("Z", " UTC") : "";
  }

  // ---- grants and void -----------------------------------------------------------------------

  function loadGrants() {
    if (!state.customer) return Promise.resolve();
    var seq = ++state.grantsSeq;
    var customer = state.customer;
    $["grants-status"].textContent = "Loading grants…";
    $["grants-body"].parentNode.setAttribute("aria-busy", "true");
    return listAll("/api/v1/credits/grants", {
      customerId: customer.id, resourceId: state.resourceId
    }).then(function (result) {
      if (seq !== state.grantsSeq) return;
      state.grants = result.items.slice().reverse();   // newest first
      renderGrants();
      var count = state.grants.length;
      $["grants-status"].textContent = count
        ? count + (count === 1 ? " grant" : " grants") + (result.more ? " (the first " + count + " only)" : "") +
          (state.resourceId ? " on resource " + state.resourceId : " without a resource") + ", newest first."
        : "No grants" + (state.resourceId ? " on resource " + state.resourceId : " without a resource") + " yet.";
    }, function (error) {
      if (seq !== state.grantsSeq) return;
      $["grants-status"].textContent = "";
      message($["grants-message"], "error", "Grants could not be listed. " + errorText(error));
    }).then(function () {
      if (seq === state.grantsSeq) $["grants-body"].parentNode.removeAttribute("aria-busy");
    });
  }

  function renderGrants() {
    var body = $["grants-body"];
    clear(body);
    $["grants-caption"].textContent = "Grants of " + (state.customer.name || state.customer.id) + ", newest first";
    state.grants.forEach(function (g) {
      var row = el("tr", { "data-testid": "grant-row", "data-grant-id": g.id, "data-status": g.status });
      var reason = el("td");
      reason.appendChild(el("div", null, g.displayName || "—"));
      reason.appendChild(el("div", { "class": "hint mono" }, g.id));
      if (g.comment) reason.appendChild(el("div", { "class": "hint" }, g.comment));
      row.appendChild(reason);
      row.appendChild(el("td", null, g.grantType === "PAID" ? "Paid" : g.grantType === "PROMOTIONAL" ? "Promotional" : String(g.grantType || "")));
      var status = el("td");
      status.appendChild(el("span", { "class": "status", "data-status": g.status }, statusLabel(g.status, g)));
      row.appendChild(status);
      row.appendChild(el("td", { "class": "num" }, remainingOf(g) + " / " + g.amount));
      row.appendChild(el("td", null, g.currencyId + (g.resourceId ? " · " + g.resourceId : "")));
      row.appendChild(el("td", { "class": "num" }, String(g.priority)));
      row.appendChild(dateCell(g.effectiveAt));
      row.appendChild(dateCell(g.expireAt));
      var action = el("td");
      if (VOIDABLE[g.status]) {
        var button = el("button", {
          type: "button", "class": "button button--small", "data-testid": "void-grant",
          "data-void-grant": g.id
        }, "Void");
        button.appendChild(el("span", { "class": "visually-hidden" }, " grant " + (g.displayName || g.id)));
        action.appendChild(button);
      }
      row.appendChild(action);
      body.appendChild(row);
    });
  }

  function askVoid(grantId, opener) {
    var grant = null;
    state.grants.forEach(function (g) { if (g.id === grantId) grant = g; });
    state.voiding = { id: grantId, grant: grant, opener: opener, key: uuid(), done: false };
    var text = grant
      ? "Void “" + (grant.displayName || grant.id) + "” (" + grant.id + ")? Its remaining " +
        remainingOf(grant) + " " + currencyName(grant.currencyId, remainingOf(grant)) +
        " leave the balance at once."
      : "Void grant " + grantId + "? Its remaining credits leave the balance at once.";
    $["void-text"].textContent = text;
    $["void-confirm"].disabled = false;
    if (typeof $["void-dialog"].showModal === "function") $["void-dialog"].showModal();
    else $["void-dialog"].setAttribute("open", "");
    $["void-cancel"].focus();
  }

  function confirmVoid() {
    var voiding = state.voiding;
    if (!voiding) return;
    $["void-confirm"].disabled = true;
    $["void-confirm"].setAttribute("aria-busy", "true");
    api("POST", "/api/v1/credits/grants/" + encodeURIComponent(voiding.id) + "/void", {
      idempotencyKey: voiding.key
    }).then(function (answer) {
      var grant = answer.data || {};
      voiding.done = true;
      var text = "Voided “" + (grant.displayName || voiding.id) + "” (" + voiding.id + ").";
      message($["grants-message"], "success", text);
      announce(text);
      closeVoidDialog();
      loadGrants();
      refreshWidgets();
    }, function (error) {
      closeVoidDialog();
      message($["grants-message"], "error", "The grant was not voided. " + errorText(error));
      loadGrants();
    }).then(function () {
      $["void-confirm"].removeAttribute("aria-busy");
    });
  }

  function closeVoidDialog() {
    if ($["void-dialog"].open) {
      if (typeof $["void-dialog"].close === "function") $["void-dialog"].close();
      else { $["void-dialog"].removeAttribute("open"); afterVoidDialog(); }
    }
  }

  function afterVoidDialog() {
    var voiding = state.voiding;
    state.voiding = null;
    if (!voiding) return;
    // Back to where the operator was; the row's button is gone once the grant is voided.
    if (voiding.opener && document.contains(voiding.opener) && !voiding.done) voiding.opener.focus();
    else $["grants-message"].focus({ preventScroll: false });
  }

  function statusLabel(status, grant) {
    var labels = { ACTIVE: "Active", SCHEDULED: "Scheduled", EXPIRED: "Expired", VOIDED: "Voided",
                   PAYMENT_PENDING: "Payment pending" };
    if (status === "ACTIVE" && grant && remainingOf(grant) === "0") return "Depleted";
    return labels[status] || String(status || "");
  }

  function remainingOf(grant) {
    // Nothing is left of an expired or voided grant: its remainder left the balance.
    if (grant.status === "EXPIRED" || grant.status === "VOIDED") return "0";
    var amount = toUnits(grant.amount);
    var consumed = toUnits(grant.consumedAmount || "0");
    if (amount === null || consumed === null) return "?";
    return fromUnits(amount - consumed);
  }

  // ---- form errors and messages -----------------------------------------------------------------

  function showFieldError(field, text) {
    var id = GRANT_FIELDS[field];
    if (!id) return;
    var control = document.getElementById(id);
    var slot = document.getElementById(id + "-error");
    setFieldError(control, slot, text);
  }

  function focusField(field) {
    var id = GRANT_FIELDS[field];
    if (!id) return;
    var control = document.getElementById(id);
    if (control && control.tagName === "FIELDSET") control = control.querySelector("input");
    if (control) control.focus();
  }

  function setFieldError(control, slot, text) {
    if (slot) slot.textContent = text;
    if (!control) return;
    if (text) control.setAttribute("aria-invalid", "true");
    else control.removeAttribute("aria-invalid");
  }

  function clearFieldError(control) {
    if (!control || !control.id) return;
    setFieldError(control, document.getElementById(control.id + "-error"), "");
  }

  function clearFormErrors() {
    Object.keys(GRANT_FIELDS).forEach(function (field) { showFieldError(field, ""); });
  }

  function message(node, kind, text) {
    node.setAttribute("data-kind", kind);
    node.textContent = text;
    if (!node.hasAttribute("tabindex")) node.setAttribute("tabindex", "-1");
  }

  function announce(text) {
    // Cleared first so that the same text said twice is announced twice.
    $["announcer"].textContent = "";
    window.setTimeout(function () { $["announcer"].textContent = text; }, 50);
  }

  // ---- exact numbers -------------------------------------------------------------------------

  /* JSON.parse, but every number is kept as the string the server wrote: the widgets'
   * parser (creditd.js loads first, both deferred, in order). */
  function parseJson(text) {
    return window.Creditd.parseJSON(text);
  }

  /* A decimal string as a BigInt of 10^-5 units (the API's precision), or null. */
  function toUnits(value) {
    var m = /^(-)?(\d+)(?:\.(\d+))?(?:[eE]([+-]?\d+))?$/.exec(String(value).trim());
    if (!m) return null;
    var digits = m[2] + (m[3] || "");
    var exponent = (m[4] ? parseInt(m[4], 10) : 0) - (m[3] || "").length + DECIMALS;
    if (exponent >= 0) digits += new Array(exponent + 1).join("0");
    else digits = digits.slice(0, digits.length + exponent) || "0";   // beyond 5 dp: never sent
    var units = BigInt(digits);
    return m[1] ? -units : units;
  }

  function fromUnits(units) {
    var negative = units < 0n;
    var digits = (negative ? -units : units).toString();
    while (digits.length <= DECIMALS) digits = "0" + digits;
    var whole = digits.slice(0, digits.length - DECIMALS);
    var fraction = digits.slice(digits.length - DECIMALS).replace(/0+$/, "");
    return (negative ? "-" : "") + whole + (fraction ? "." + fraction : "");
  }

  // ---- small helpers ---------------------------------------------------------------------------

  function el(tag, attributes, text) {
    var node = document.createElement(tag);
    if (attributes) {
      Object.keys(attributes).forEach(function (name) { node.setAttribute(name, attributes[name]); });
    }
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
  }

  function dateCell(iso) {
    var cell = el("td");
    if (!iso) {
      cell.textContent = "—";
      return cell;
    }
    var time = el("time", { datetime: iso }, formatDate(iso));
    time.setAttribute("title", iso);
    cell.appendChild(time);
    return cell;
  }

  function formatDate(iso) {
    var date = new Date(iso);
    if (isNaN(date.getTime())) return iso;
    return date.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
  }

  /* A datetime-local value ("2026-03-01T09:30" or with seconds) in this browser's time
   * zone, as an ISO time in UTC. */
  function localToIso(value) {
    var m = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,3}))?)?$/.exec(value);
    if (!m) return null;
    var date = new Date(+m[1], +m[2] - 1, +m[3], +m[4], +m[5], +(m[6] || 0), +((m[7] || "0") + "00").slice(0, 3));
    return isNaN(date.getTime()) ? null : date.toISOString();
  }

  function timezoneText() {
    var zone = "";
    try { zone = Intl.DateTimeFormat().resolvedOptions().timeZone || ""; } catch (e) { zone = ""; }
    var offset = -new Date().getTimezoneOffset();
    var sign = offset >= 0 ? "+" : "−";
    var abs = Math.abs(offset);
    var hh = String(Math.floor(abs / 60)).padStart(2, "0");
    var mm = String(abs % 60).padStart(2, "0");
    var utc = "UTC" + (offset ? sign + hh + ":" + mm : "");
    var name = zone && zone !== "UTC" && zone !== "Etc/UTC" ? zone + ", " + utc : utc;
    return "Dates are in your time zone (" + name + ") and are sent in UTC.";
  }

  function uuid() {
    if (window.crypto && typeof window.crypto.randomUUID === "function") return window.crypto.randomUUID();
    // crypto.randomUUID needs a secure context (https or localhost); the same v4 layout.
    var bytes = new Uint8Array(16);
    window.crypto.getRandomValues(bytes);
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    var hex = Array.prototype.map.call(bytes, function (b) { return (b + 0x100).toString(16).slice(1); }).join("");
    return hex.slice(0, 8) + "-" + hex.slice(8, 12) + "-" + hex.slice(12, 16) + "-" + hex.slice(16, 20) + "-" + hex.slice(20);
  }
})();
