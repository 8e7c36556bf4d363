/* creditd customer portal: /portal?token=<customer token>
 *
 * Loaded as the first, parser-blocking script in <head>, so that before the page loads
 * anything else or draws anything:
 *   1. the token leaves the address bar (history.replaceState; other parameters stay), so it
 *      is not kept in the history, in bookmarks or sent in a Referer;
 *   2. the exchange starts: GET /api/v1/portal/session with `Authorization: Bearer <token>`
 *      → {customerId, resourceId, expiresAt}.
 * Once the document is parsed (creditd.js, deferred, has run by then) the page configures
 * the widgets (Creditd.configure({token, customerId, resourceId})) and puts them in place.
 * An expired or unknown token shows a message and no widget.
 *
 * The token is kept in memory and in sessionStorage (this tab only), so a reload in the
 * same tab works; a token in the address bar always wins over the stored one. `#token=` is
 * read as well as `?token=` (a fragment never reaches a server's logs).
 *
 * Query parameters the page keeps and reads:
 *   parentOrigin  the embedding page's origin: messages are then only taken from it and
 *                 only sent to it (otherwise: from the parent frame, to any origin)
 *   locale        a BCP 47 tag for the widgets' numbers and dates
 *   theme         light | dark (default: the viewer's preference)
 *   widgets       comma list of panels to show: balance, utilization, usage, grants,
 *                 auto-recharge, ledger (default: all)
 *
 * In an iframe, messages with the parent frame (window.postMessage):
 *   in   {type: "creditd:token", token}                      a renewed token
 *   out  {type: "creditd:ready", customerId, resourceId, expiresAt}
 *        {type: "creditd:token-expiring", expiresAt}        a minute before it expires
 *        {type: "creditd:token-expired"}                    widgets removed until renewed
 *        {type: "creditd:token-invalid", reason}            refused (reason: invalid, or for
 *                                                           a renewal expired | error | busy;
 *                                                           the current session carries on)
 *        {type: "creditd:add-credits", customerId, currencyId, resourceId}
 *        {type: "creditd:resize", height}                   the page's height in CSS px
 * Outside an iframe the "Add credits" buttons are not shown (nothing could act on them).
 *
 * No inline script or handler anywhere (CSP script-src 'self'); every string from the
 * server or the address bar is rendered with textContent.
 */
(function () {
  "use strict";

  var SESSION_PATH = "/api/v1/portal/session";
  var STORAGE_KEY = "creditd.portal.token";
  var EXPIRING_NOTICE_MS = 60 * 1000;
  var TOKEN_LENGTH_MAX = 8192;
  var EXCHANGE_ATTEMPTS_MAX = 3;
  var PANELS = ["balance", "utilization", "usage", "grants", "auto-recharge", "ledger"];

  // Every text the page itself shows (the widgets have their own table, in creditd.js).
  var TEXTS = {
    loading: "Loading your credits…",
    ready: "Your credits are up to date.",
    renewing: "Renewing your session…",
    missingTitle: "No access link",
    missingText: "Open this page from your account with the link your application gives you.",
    invalidTitle: "This link is not valid",
    invalidText: "Ask your application for a new link to your credits.",
    expiredTitle: "Your session has expired",
    expiredText: "Reopen this page from your application to see your credits again.",
    expiredTextFramed: "Your session has expired. It will resume when your application renews it.",
    errorTitle: "Your credits could not be loaded",
    errorText: "The server could not be reached or answered with an error. Try again in a moment.",
    busyText: "Too many requests right now. Try again in a moment.",
    scriptTitle: "The credits widgets could not be loaded",
    scriptText: "Reload the page to try again."
  };

  var framed = (function () {
    try { return window.parent !== window; } catch (e) { return true; }
  })();

  // ---- 1. the token leaves the address bar, now -----------------------------------------

  /* The token of the current address (query or fragment), taken out of it. */
  function takeToken() {
    var here = new URL(window.location.href);
    var fragment = new URLSearchParams(here.hash.replace(/^#/, ""));
    var found = here.searchParams.get("token") || fragment.get("token") || null;
    if (here.searchParams.has("token") || fragment.has("token")) {
      here.searchParams.delete("token");
      fragment.delete("token");
      var rest = fragment.toString();
      try {
        history.replaceState(history.state, "", here.pathname + here.search + (rest ? "#" + rest : ""));
      } catch (e) {
        // A sandboxed frame without a real origin cannot rewrite its URL; nothing else to do.
      }
    }
    return found && found.length <= TOKEN_LENGTH_MAX ? found : null;
  }

  var urlToken = takeToken();
  var params = new URL(window.location.href).searchParams;
  var parentOrigin = validOrigin(params.get("parentOrigin"));
  var locale = validLocale(params.get("locale"));
  var theme = params.get("theme");
  if (theme === "light" || theme === "dark") {
    document.documentElement.setAttribute("data-theme", theme);
  }
  if (locale) document.documentElement.setAttribute("lang", locale);
  if (framed) document.documentElement.classList.add("is-framed");
  var panels = wantedPanels(params.get("widgets"));

  function storage(token) {
    // sessionStorage is refused in some sandboxed or third-party frames: memory only then.
    try {
      if (token === undefined) return window.sessionStorage.getItem(STORAGE_KEY);
      if (token === null) window.sessionStorage.removeItem(STORAGE_KEY);
      else window.sessionStorage.setItem(STORAGE_KEY, token);
    } catch (e) { /* memory only */ }
    return null;
  }

  var token = null;
  if (urlToken) {
    token = urlToken;
    storage(token);
  } else {
    token = storage() || null;
  }

  // ---- 2. the exchange starts at once ----------------------------------------------------

  var firstExchange = token ? exchange(token) : Promise.resolve({ kind: "missing" });

  // ---- state ------------------------------------------------------------------------------

  var session = null;       // {customerId, resourceId, expiresAt}
  var timers = [];
  var els = null;
  var generation = 0;       // the latest exchange wins when a renewal races another

  onDocumentReady(function () {
    els = {
      root: document.getElementById("portal"),
      status: document.getElementById("portal-status"),
      message: document.getElementById("portal-message"),
      messageTitle: document.getElementById("portal-message-title"),
      messageText: document.getElementById("portal-message-text"),
      retry: document.getElementById("portal-retry"),
      widgets: document.getElementById("portal-widgets"),
      template: document.getElementById("portal-widgets-template")
    };
    els.retry.addEventListener("click", function () {
      if (!token) return;
      setState("loading", TEXTS.loading);
      settle(exchange(token), token);
    });
    document.addEventListener("creditd-token-expired", function () { expired(); });
    document.addEventListener("creditd-add-credits", function (event) {
      var detail = event.detail || {};
      tellParent({
        type: "creditd:add-credits",
        customerId: str(detail.customerId),
        currencyId: str(detail.currencyId),
        resourceId: str(detail.resourceId)
      });
    });
    window.addEventListener("message", onMessage);
    // A new #token=… on the same page (a parent setting the frame's fragment) is a renewal.
    window.addEventListener("hashchange", function () {
      var renewed = takeToken();
      if (!renewed) return;
      if (!isShowing()) setState("loading", TEXTS.renewing);
      settle(exchange(renewed), renewed);
    });
    watchHeight();
    settle(firstExchange, token);
  });

  // ---- the exchange ------------------------------------------------------------------------

  /* GET /api/v1/portal/session. Resolves (never rejects) to one of
   *   {kind: "ok", session, serverNow}   serverNow: the server's clock (Date header) in ms
   *   {kind: "expired"} | {kind: "invalid"} | {kind: "busy"} | {kind: "error"}
   * 429, 503 and network failures are retried a few times, honouring Retry-After. */
  function exchange(candidate, attempt) {
    attempt = attempt || 1;
    return fetch(SESSION_PATH, {
      headers: { "Authorization": "Bearer " + candidate, "Accept": "application/json" },
      cache: "no-store",
      credentials: "omit",
      referrerPolicy: "no-referrer"
    }).then(function (res) {
      return res.text().then(function (text) {
        var body = null;
        try { body = text ? JSON.parse(text) : null; } catch (e) { body = null; }
        if (res.ok && body && body.data && typeof body.data.customerId === "string") {
          var serverNow = Date.parse(res.headers.get("Date") || "");
          return {
            kind: "ok",
            session: {
              customerId: body.data.customerId,
              resourceId: typeof body.data.resourceId === "string" ? body.data.resourceId : null,
              expiresAt: typeof body.data.expiresAt === "string" ? body.data.expiresAt : null
            },
            serverNow: isNaN(serverNow) ? Date.now() : serverNow
          };
        }
        var code = body && typeof body.code === "string" ? body.code : "";
        if (res.status === 401 && code === "TokenExpired") return { kind: "expired" };
        if (res.status === 401 || res.status === 403) return { kind: "invalid" };
        if ((res.status === 429 || res.status === 503) && attempt < EXCHANGE_ATTEMPTS_MAX) {
          return delay(retryAfterMs(res, attempt)).then(function () {
            return exchange(candidate, attempt + 1);
          });
        }
        return { kind: res.status === 429 ? "busy" : "error" };
      });
    }, function () {
      if (attempt < EXCHANGE_ATTEMPTS_MAX) {
        return delay(500 * attempt).then(function () { return exchange(candidate, attempt + 1); });
      }
      return { kind: "error" };
    });
  }

  function settle(pending, candidate) {
    var mine = ++generation;
    var renewing = isShowing();
    return pending.then(function (result) {
      if (mine !== generation) return;   // a newer token arrived meanwhile
      if (result.kind === "ok") {
        token = candidate;
        storage(token);
        session = result.session;
        show(result.serverNow);
        return;
      }
      if (renewing && isShowing()) {
        // A renewal that failed while the current token still works: keep showing, tell
        // the parent; the current token's own expiry still ends the session.
        tellParent({ type: "creditd:token-invalid", reason: result.kind });
        return;
      }
      if (result.kind === "missing") {
        fail("missing", TEXTS.missingTitle, TEXTS.missingText);
      } else if (result.kind === "expired") {
        expired();
      } else if (result.kind === "invalid") {
        fail("invalid", TEXTS.invalidTitle, TEXTS.invalidText);
        forget();
        tellParent({ type: "creditd:token-invalid", reason: "invalid" });
      } else {
        fail("error", TEXTS.errorTitle, result.kind === "busy" ? TEXTS.busyText : TEXTS.errorText, true);
      }
    });
  }

  // ---- showing the widgets ----------------------------------------------------------------

  function show(serverNow) {
    var Creditd = window.Creditd;
    if (!Creditd || typeof Creditd.configure !== "function") {
      fail("error", TEXTS.scriptTitle, TEXTS.scriptText);
      return;
    }
    var config = {
      token: token,
      customerId: session.customerId,
      resourceId: session.resourceId,
      apiKey: null
    };
    if (locale) config.locale = locale;
    // Configure before the elements exist, so each starts with its final settings.
    Creditd.configure(config);
    if (!els.widgets.firstElementChild) {
      var content = els.template.content.cloneNode(true);
      Array.prototype.forEach.call(content.querySelectorAll("[data-widget]"), function (panel) {
        if (panels.indexOf(panel.getAttribute("data-widget")) < 0) panel.remove();
      });
      if (framed) {
        var balance = content.querySelector("creditd-balance");
        if (balance) balance.setAttribute("add-credits", "");
      }
      els.widgets.appendChild(content);
    }
    els.message.hidden = true;
    els.widgets.hidden = false;
    setState("ready", TEXTS.ready);
    scheduleExpiry(serverNow);
    tellParent({
      type: "creditd:ready",
      customerId: session.customerId,
      resourceId: session.resourceId,
      expiresAt: session.expiresAt
    });
  }

  function isShowing() {
    return !!els && els.root.getAttribute("data-state") === "ready";
  }

  function hideWidgets() {
    // Removing the elements disconnects them: their feeds close and nothing retries.
    while (els.widgets.firstChild) els.widgets.removeChild(els.widgets.firstChild);
    els.widgets.hidden = true;
  }

  function fail(state, title, text, retry) {
    clearTimers();
    hideWidgets();
    els.messageTitle.textContent = title;
    els.messageText.textContent = text;
    els.retry.hidden = !retry;
    els.message.hidden = false;
    setState(state, "");
  }

  function expired() {
    if (!els || els.root.getAttribute("data-state") === "expired") return;
    // The widgets go first, so none of them reloads without a token.
    fail("expired", TEXTS.expiredTitle, framed ? TEXTS.expiredTextFramed : TEXTS.expiredText);
    forget();
    tellParent({ type: "creditd:token-expired" });
  }

  function forget() {
    token = null;
    session = null;
    storage(null);
    var Creditd = window.Creditd;
    if (Creditd && typeof Creditd.configure === "function") Creditd.configure({ token: null });
  }

  function setState(state, text) {
    els.root.setAttribute("data-state", state);
    els.root.setAttribute("aria-busy", state === "loading" ? "true" : "false");
    els.status.textContent = text;
    els.status.hidden = !text;
    // Once the widgets show, the line is for screen readers only.
    els.status.classList.toggle("visually-hidden", state === "ready");
  }

  // ---- expiry and renewal -----------------------------------------------------------------

  function scheduleExpiry(serverNow) {
    clearTimers();
    if (!session || !session.expiresAt) return;
    var expiresAt = Date.parse(session.expiresAt);
    if (isNaN(expiresAt)) return;
    // Measured on the server's clock (the Date header), so a wrong clock here does not
    // expire the page early or late.
    var left = expiresAt - serverNow;
    var at = session.expiresAt;
    if (left - EXPIRING_NOTICE_MS > 0) {
      timers.push(window.setTimeout(function () {
        tellParent({ type: "creditd:token-expiring", expiresAt: at });
      }, left - EXPIRING_NOTICE_MS));
    }
    timers.push(window.setTimeout(expired, Math.max(0, left)));
  }

  function clearTimers() {
    timers.forEach(function (t) { window.clearTimeout(t); });
    timers = [];
  }

  function onMessage(event) {
    if (!framed || event.source !== window.parent) return;
    if (parentOrigin && event.origin !== parentOrigin) return;
    var data = event.data;
    if (!data || typeof data !== "object" || data.type !== "creditd:token") return;
    if (typeof data.token !== "string" || !data.token || data.token.length > TOKEN_LENGTH_MAX) return;
    if (!isShowing()) setState("loading", TEXTS.renewing);
    settle(exchange(data.token), data.token);
  }

  function tellParent(message) {
    if (!framed) return;
    try { window.parent.postMessage(message, parentOrigin || "*"); } catch (e) { /* gone */ }
  }

  // In a frame, the parent may size the iframe to the content.
  function watchHeight() {
    if (!framed || typeof ResizeObserver !== "function") return;
    var last = -1;
    var queued = false;
    var observer = new ResizeObserver(function () {
      if (queued) return;
      queued = true;
      window.requestAnimationFrame(function () {
        queued = false;
        var height = Math.ceil(document.documentElement.scrollHeight);
        if (height !== last) {
          last = height;
          tellParent({ type: "creditd:resize", height: height });
        }
      });
    });
    observer.observe(document.body);
  }

  // ---- small helpers ----------------------------------------------------------------------

  function onDocumentReady(fn) {
    if (document.readyState === "loading") {
      document.addEventListener("DOMContentLoaded", fn, { once: true });
    } else {
      fn();
    }
  }

  function delay(ms) {
    return new Promise(function (resolve) { window.setTimeout(resolve, ms); });
  }

  function retryAfterMs(res, attempt) {
    var seconds = parseInt(res.headers.get("Retry-After") || "", 10);
    if (!isNaN(seconds) && seconds >= 0) return Math.min(seconds, 10) * 1000;
    return 500 * attempt;
  }

  function validOrigin(value) {
    if (!value) return null;
    try {
      var origin = new URL(value).origin;
      return origin && origin !== "null" ? origin : null;
    } catch (e) { return null; }
  }

  function validLocale(value) {
    if (!value || !/^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8}){0,3}$/.test(value)) return null;
    try { return Intl.getCanonicalLocales(value)[0] || null; } catch (e) { return null; }
  }

  function wantedPanels(value) {
    if (!value) return PANELS.slice();
    var wanted = value.split(",").map(function (s) { return s.trim(); })
      .filter(function (s) { return PANELS.indexOf(s) >= 0; });
    return wanted.length ? wanted : PANELS.slice();
  }

  function str(value) {
    return typeof value === "string" ? value : null;
  }
})();
