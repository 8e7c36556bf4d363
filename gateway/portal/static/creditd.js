/*! creditd widgets — framework-free custom elements for a customer's credits.
 *
 * <script src="https://CREDITD/widgets/creditd.js" defer></script>
 * <creditd-balance token="…" add-credits></creditd-balance>
 *
 * Elements: <creditd-balance>, <creditd-utilization>, <creditd-usage-chart>,
 * <creditd-grants>, <creditd-ledger>, <creditd-auto-recharge>; global API: window.Creditd
 * (configure, api, texts, format, decimal). docs/portal.md has the guide; this comment is
 * the reference.
 *
 * Common attributes (each overrides Creditd.configure's value of the same name):
 *   base-url     the creditd server (default: the origin this script was loaded from)
 *   token        a customer token (sent as `Authorization: Bearer …`)
 *   customer-id  the customer (with a token and none given, GET /api/v1/portal/session says)
 *   resource-id  the resource (with a resource token and none given, the session says);
 *                configure({resourceId: null}) counts as given (a customer-wide token), so
 *                with customerId configured too no element asks the session
 *   currency-id  one credit type only (default: every credit type the customer has)
 *   locale       BCP 47 tag for dates and numbers (default: the browser's language)
 *   heading-level  2 (default) … 6: the level of the widget's heading
 * Properties: `apiKey` (sent as X-API-KEY when there is no token; never an attribute, so it
 * cannot leak through the DOM or a URL), `texts` (an object of texts for this element).
 * Every element sets `data-state` = loading | ready | empty | error (and, while it listens to
 * the live feed, `data-live` = connecting | live | reconnecting | expired | failed), and
 * dispatches `creditd-token-expired` (bubbles, composed; detail {customerId, resourceId})
 * when the token has expired (a 401 TokenExpired answer or the feed's close 4408).
 * Elements other than the balance refresh themselves (throttled) when the feed reports a
 * change; the attribute `no-live` turns that off.
 *
 * Theming: CSS custom properties, set on the element or any ancestor (they inherit into the
 * shadow root). Shadow parts (`::part(card)`, …) are listed beside each element below.
 *   --creditd-font            font-family                      (inherit)
 *   --creditd-font-size       base size                        (14px)
 *   --creditd-color           text                             (#1f2328)
 *   --creditd-muted           secondary text                   (#59636e)
 *   --creditd-bg              widget background                (#ffffff)
 *   --creditd-surface         cards, table header              (#f6f8fa)
 *   --creditd-border          lines                            (#d1d9e0)
 *   --creditd-radius          corners                          (8px)
 *   --creditd-gap             spacing unit                     (12px)
 *   --creditd-accent          buttons, bars, links             (#0969da)
 *   --creditd-accent-text     text on accent                   (#ffffff)
 *   --creditd-warning         low balance                      (#9a6700)
 *   --creditd-warning-bg      low balance background           (#fff8c5)
 *   --creditd-danger          overdraft, errors                (#cf222e)
 *   --creditd-danger-bg       error background                 (#ffebe9)
 *   --creditd-success         "on", live dot                   (#1a7f37)
 *   --creditd-success-bg      "active" status background       (#dafbe1)
 *   --creditd-focus           focus ring                       (#0969da)
 *   --creditd-balance-size    the balance figure's size        (2em)
 *   --creditd-chart-height    the usage chart's height         (280px)
 *   --creditd-chart-1 … --creditd-chart-10   series colours    (a colour-blind-safe palette)
 *
 * Security: every string from the API (names, reasons, messages) is put in the page with
 * textContent or setAttribute only; nothing here uses innerHTML. Styles are constructable
 * stylesheets (adoptedStyleSheets), which a page's CSP `style-src` does not block.
 *
 * Amounts: the API sends JSON numbers with up to 5 decimals and up to 10^12, more digits than
 * a binary float holds. Responses are parsed with every number kept as its decimal string
 * (exactNumbers below); sums use BigInt (Dec below); amounts are shown digit for digit, with
 * the locale's separators, in a <data value="…"> element whose value is the API's number.
 */
(function () {
  "use strict";

  if (window.Creditd && window.Creditd.__loaded) return; // loaded twice: keep the first

  // The script's own URL: the default server, and where vendor/ files are (with its ?v=).
  var SCRIPT_SRC = (document.currentScript && document.currentScript.src) || "";
  var VERSION = "1.0.0";

  /* ======================================================================================
   * Texts: every visible string. Replace any with Creditd.configure({texts: {...}}) or an
   * element's `texts` property. `{name}` is replaced with a value.
   *
   * key                         default (English)
   * ====================================================================================== */
  var TEXTS = {
    // shared states
    loading: "Loading…",
    retry: "Try again",
    errorGeneric: "Could not load your credits: {message}",
    errorNetwork: "Cannot reach the credits service. Check your connection and try again.",
    sessionExpired: "Your session has expired. Reload the page or sign in again to see your credits.",
    unauthenticated: "You are not signed in: the token or key was refused.",
    forbidden: "You may not see these credits.",
    rateLimited: "Too many requests. Please wait a moment and try again.",
    missingCustomer: "No customer is set: give customer-id, or a customer token.",
    missingAuth: "No credentials: give a token (or, in an operator tool, an API key).",
    // amounts and units
    amountWithUnit: "{amount} {unit}",
    unitSingular: "credit",          // when a credit type has no unit names
    unitPlural: "credits",
    never: "Never",
    none: "—",
    // paging and sorting (tables)
    pagePrev: "Previous",
    pageNext: "Next",
    pageRange: "{from}–{to} of {total}",
    pageNumber: "Page {page}",
    sortBy: "Sort by {column}",
    // <creditd-balance>
    balanceTitle: "Balance",
    balanceEmpty: "No credits yet.",
    balanceCardLabel: "{currency} balance",
    balanceResource: "Resource: {resource}",
    balanceReserved: "{amount} on hold",
    balanceLow: "Your balance is low.",
    balanceDepleted: "You have no credits left.",
    balanceOverdraft: "Overdrawn by {amount}.",
    balanceGranted: "{amount} granted in total",
    addCredits: "Add credits",
    addCreditsLabel: "Add {currency}",
    liveOn: "Live",
    liveConnecting: "Connecting…",
    liveReconnecting: "Reconnecting…",
    liveOff: "Not live",
    historyTitle: "Recent changes",
    historyItem: "{change} at {time}",
    // <creditd-utilization>
    utilizationTitle: "Utilization",
    utilizationEmpty: "No active grants.",
    utilizationUsed: "{used} used of {total}",
    utilizationRemaining: "{amount} remaining",
    utilizationPercent: "{percent} used",
    utilizationBar: "{currency}: {percent} of active grants used",
    // <creditd-usage-chart>
    usageTitle: "Credit usage",
    usageEmpty: "No credits were used in this period.",
    rangeLabel: "Period",
    range24h: "24 hours",
    range7d: "7 days",
    range30d: "30 days",
    range12m: "12 months",
    rangeCustom: "Custom",
    rangeFrom: "From",
    rangeTo: "To",
    rangeApply: "Apply",
    rangeInvalid: "The start must be before the end.",
    granularityLabel: "Per",
    granularityAuto: "Automatic",
    granularityHour: "Hour",
    granularityDay: "Day",
    granularityWeek: "Week",
    granularityMonth: "Month",
    groupByLabel: "Group by",
    groupByFeature: "Feature",
    currencyLabel: "Credit type",
    exportCsv: "Export CSV",
    legendTitle: "Totals for the period",
    legendToggle: "Show or hide {series}",
    seriesDirect: "Used directly",
    tagEmpty: "(none)",
    weekOf: "Week of {date}",
    chartLabel: "Credits used per {granularity}, stacked by {groupBy}: {count} series, {total} in total.",
    usageTableCaption: "Credits used per period (the chart's numbers)",
    periodHeader: "Period",
    totalHeader: "Total",
    chartUnavailable: "The chart could not be loaded; the numbers are in the table below.",
    // <creditd-grants>
    grantsTitle: "Grants",
    grantsEmpty: "No grants.",
    grantsCaption: "Credit grants",
    colType: "Type",
    colStatus: "Status",
    colRemaining: "Remaining / original",
    colEffective: "Effective",
    colExpiry: "Expires",
    colReason: "Reason",
    colCurrency: "Credit type",
    grantRemaining: "{remaining} / {original}",
    grantType_PAID: "Paid",
    grantType_PROMOTIONAL: "Promotional",
    grantType_RECURRING: "Recurring",
    grantType_OVERDRAFT: "Overdraft",
    grantStatus_ACTIVE: "Active",
    grantStatus_SCHEDULED: "Scheduled",
    grantStatus_EXPIRED: "Expired",
    grantStatus_VOIDED: "Voided",
    grantStatus_DEPLETED: "Depleted",
    grantStatus_PAYMENT_PENDING: "Payment pending",
    grantsTruncated: "Showing the first {count} grants.",
    // <creditd-ledger>
    ledgerTitle: "Ledger",
    ledgerEmpty: "No entries match.",
    ledgerCaption: "Credit ledger, newest first",
    colTime: "Time",
    colEntryType: "Type",
    colGrant: "Grant",
    colFeature: "Feature",
    colChange: "Change",
    filterFrom: "From",
    filterTo: "To",
    filterTypes: "Types",
    filterApply: "Apply",
    filterReset: "Reset",
    filterAll: "All types",
    ledgerType_CREDITS_GRANTED: "Granted",
    ledgerType_CREDITS_CONSUMED: "Consumed",
    ledgerType_CREDITS_EXPIRED: "Expired",
    ledgerType_CREDITS_VOIDED: "Voided",
    ledgerType_CREDITS_UPDATED: "Updated",
    ledgerType_CREDITS_CONSUMPTION_TRANSFER_SOURCE: "Transferred out",
    ledgerType_CREDITS_CONSUMPTION_TRANSFER_TARGET: "Transferred in",
    ledgerType_CREDITS_RESERVED: "Held",
    ledgerType_CREDITS_RESERVATION_RELEASED: "Hold released",
    ledgerType_CREDITS_RESERVATION_EXPIRED: "Hold expired",
    // <creditd-auto-recharge>
    autoRechargeTitle: "Auto-recharge",
    autoRechargeEmpty: "No credit types.",
    autoRechargeOn: "On",
    autoRechargeOff: "Off",
    autoRechargeStatus: "Auto-recharge for {currency}: {status}",
    autoRechargeRule: "When the balance falls below {threshold}, top up to {target}.",
    autoRechargeNotSet: "Not set up.",
    autoRechargeSpend: "Spent this month: {spend} of {cap}",
    autoRechargeSpendNoCap: "Spent this month: {spend} (no monthly cap)",
    autoRechargeSpendBar: "{percent} of the monthly cap spent",
    autoRechargeInFlight: "A top-up of {cost} is being paid.",
    autoRechargeFailure: "The last top-up failed: {reason}",
    autoRechargeExpiry_1_MONTH: "Top-up credits expire a month after purchase.",
    autoRechargeExpiry_1_YEAR: "Top-up credits expire a year after purchase."
  };

  /* ======================================================================================
   * Configuration: global defaults, every connected element reloads when they change.
   * ====================================================================================== */
  var config = { baseUrl: null, token: null, apiKey: null, customerId: null, resourceId: null,
                 currencyId: null, locale: null, texts: {} };
  // Whether configure() was given a resourceId at all: `resourceId: null` is a known value
  // (the token reads the customer's own pools), not a missing one, so the elements need not
  // ask /api/v1/portal/session. Cleared when the token or the customer changes without it.
  var resourceGiven = false;
  var liveElements = new Set();

  function configure(options) {
    options = options || {};
    if ("resourceId" in options) resourceGiven = true;
    else if (("token" in options && options.token !== config.token) ||
             ("customerId" in options && options.customerId !== config.customerId)) resourceGiven = false;
    Object.keys(options).forEach(function (k) {
      if (k === "texts") config.texts = Object.assign({}, config.texts, options.texts || {});
      else if (k in config) config[k] = options[k] == null || options[k] === "" ? null : options[k];
    });
    // Soft: what is shown stays until the new data is in (a renewed token must not blank
    // the page).
    liveElements.forEach(function (el) { el._softly(function () { el.reload(); }); });
    return Object.assign({}, config, { apiKey: config.apiKey ? "(set)" : null });
  }

  function defaultBaseUrl() {
    try { return new URL(SCRIPT_SRC).origin; } catch (e) { return location.origin; }
  }

  /* ======================================================================================
   * Exact numbers: JSON numbers become their decimal strings before JSON.parse, so an
   * amount like 1000000000000.00001 keeps every digit. Counts (eventCount, seq, priority)
   * are strings too; the code turns them into numbers where it counts or compares.
   * ====================================================================================== */
  function exactNumbers(text) {
    var out = "", last = 0, i = 0, n = text.length;
    while (i < n) {
      var c = text.charCodeAt(i);
      if (c === 34) { // a string: skip it, escapes included
        i++;
        while (i < n) {
          var d = text.charCodeAt(i);
          if (d === 92) i += 2;
          else if (d === 34) { i++; break; }
          else i++;
        }
      } else if (c === 45 || (c >= 48 && c <= 57)) { // a number
        var start = i++;
        while (i < n) {
          var e = text.charCodeAt(i);
          if ((e >= 48 && e <= 57) || e === 46 || e === 101 || e === 69 || e === 43 || e === 45) i++;
          else break;
        }
        out += text.slice(last, start) + '"' + Dec.plain(text.slice(start, i)) + '"';
        last = i;
      } else {
        i++;
      }
    }
    return JSON.parse(out + text.slice(last));
  }

  /* ======================================================================================
   * Dec: exact decimal strings (BigInt with a common scale). Only what the widgets need:
   * sums, differences, comparisons, and a ratio (a float, for bar widths only).
   * ====================================================================================== */
  var Dec = {
    // "1.5e3" -> "1500", "-0.0" -> "0", "007" -> "7": the plain form of a decimal string.
    plain: function (s) {
      s = String(s).trim();
      var neg = s.charAt(0) === "-";
      if (neg || s.charAt(0) === "+") s = s.slice(1);
      var exp = 0, m = s.search(/[eE]/);
      if (m >= 0) { exp = parseInt(s.slice(m + 1), 10) || 0; s = s.slice(0, m); }
      var dot = s.indexOf(".");
      var digits = dot < 0 ? s : s.slice(0, dot) + s.slice(dot + 1);
      var point = (dot < 0 ? s.length : dot) + exp;
      if (!/^\d*$/.test(digits) || digits === "") return "0";
      if (point <= 0) { digits = "0".repeat(1 - point) + digits; point = 1; }
      if (point > digits.length) digits += "0".repeat(point - digits.length);
      var ip = digits.slice(0, point).replace(/^0+(?=\d)/, "");
      var fp = digits.slice(point).replace(/0+$/, "");
      var r = fp ? ip + "." + fp : ip;
      return neg && /[1-9]/.test(r) ? "-" + r : r;
    },
    scale: function (s) { var i = String(s).indexOf("."); return i < 0 ? 0 : String(s).length - i - 1; },
    big: function (s, scale) {
      s = Dec.plain(s);
      var neg = s.charAt(0) === "-";
      if (neg) s = s.slice(1);
      var p = s.split(".");
      var f = (p[1] || "");
      while (f.length < scale) f += "0";
      var b = BigInt(p[0] + f);
      return neg ? -b : b;
    },
    fromBig: function (b, scale) {
      var neg = b < 0n;
      var s = (neg ? -b : b).toString();
      while (s.length <= scale) s = "0" + s;
      var ip = s.slice(0, s.length - scale), fp = s.slice(s.length - scale).replace(/0+$/, "");
      var r = fp ? ip + "." + fp : ip;
      return neg && r !== "0" ? "-" + r : r;
    },
    _op: function (a, b, fn) {
      a = a == null ? "0" : String(a); b = b == null ? "0" : String(b);
      var sc = Math.max(Dec.scale(Dec.plain(a)), Dec.scale(Dec.plain(b)));
      return fn(Dec.big(a, sc), Dec.big(b, sc), sc);
    },
    add: function (a, b) { return Dec._op(a, b, function (x, y, sc) { return Dec.fromBig(x + y, sc); }); },
    sub: function (a, b) { return Dec._op(a, b, function (x, y, sc) { return Dec.fromBig(x - y, sc); }); },
    cmp: function (a, b) { return Dec._op(a, b, function (x, y) { return x < y ? -1 : x > y ? 1 : 0; }); },
    sum: function (list) { return list.reduce(function (acc, v) { return Dec.add(acc, v); }, "0"); },
    sign: function (a) { return Dec.cmp(a, "0"); },
    abs: function (a) { a = Dec.plain(a); return a.charAt(0) === "-" ? a.slice(1) : a; },
    neg: function (a) { return Dec.sub("0", a); },
    max: function (a, b) { return Dec.cmp(a, b) >= 0 ? a : b; },
    // a / b as a float in [0, 1] (for a bar's width and a rounded percentage; never shown as
    // an amount).
    ratio: function (a, b) {
      if (Dec.sign(b) <= 0) return 0;
      return Dec._op(a, b, function (x, y) {
        var r = Number((x * 1000000n) / y) / 1000000;
        return Math.max(0, Math.min(1, r));
      });
    }
  };

  /* ======================================================================================
   * Formatting: amounts exactly (Intl with a decimal string where the browser supports it,
   * Intl.NumberFormat v3; else the locale's separators put in by hand), dates in the
   * viewer's locale and time zone, unit names singular/plural by the locale's plural rules.
   * ====================================================================================== */
  var fmtCache = new Map();
  function cached(key, make) {
    var v = fmtCache.get(key);
    if (v === undefined) { v = make(); fmtCache.set(key, v); }
    return v;
  }
  function safeLocale(locale) {
    try { return Intl.NumberFormat.supportedLocalesOf([locale]).length ? locale : undefined; }
    catch (e) { return undefined; }
  }

  // Does this browser format decimal strings exactly (no trip through a float)?
  var EXACT_INTL = (function () {
    try {
      return new Intl.NumberFormat("en-US", { maximumFractionDigits: 20 })
        .format("1000000000000.00001") === "1,000,000,000,000.00001";
    } catch (e) { return false; }
  })();

  function formatAmount(value, locale, opts) {
    opts = opts || {};
    var s = Dec.plain(value == null ? "0" : value);
    var key = "n|" + locale + "|" + (opts.signed ? "s" : "");
    if (EXACT_INTL) {
      var nf = cached(key, function () {
        return new Intl.NumberFormat(safeLocale(locale), {
          maximumFractionDigits: 20, signDisplay: opts.signed ? "exceptZero" : "auto" });
      });
      return nf.format(s);
    }
    // By hand: the locale's group and decimal separators around the exact digits.
    var seps = cached("sep|" + locale, function () {
      var parts = new Intl.NumberFormat(safeLocale(locale)).formatToParts(1234567.5);
      var g = parts.find(function (p) { return p.type === "group"; });
      var d = parts.find(function (p) { return p.type === "decimal"; });
      return { group: g ? g.value : ",", decimal: d ? d.value : "." };
    });
    var neg = s.charAt(0) === "-";
    if (neg) s = s.slice(1);
    var p = s.split(".");
    var ip = p[0].replace(/\B(?=(\d{3})+(?!\d))/g, seps.group);
    var r = p[1] ? ip + seps.decimal + p[1] : ip;
    if (neg) return "-" + r;
    return opts.signed && s !== "0" ? "+" + r : r;
  }

  // Money (auto-recharge prices and spend): the currency's own format, exact digits.
  function formatMoney(value, currency, locale) {
    var s = Dec.plain(value == null ? "0" : value);
    var code = String(currency || "usd").toUpperCase();
    try {
      var nf = cached("m|" + locale + "|" + code, function () {
        return new Intl.NumberFormat(safeLocale(locale), { style: "currency", currency: code,
                                                           maximumFractionDigits: 5 });
      });
      if (EXACT_INTL) return nf.format(s);
      if (Dec.scale(s) <= 5 && Math.abs(Number(s)) < 1e9) return nf.format(Number(s));
    } catch (e) { /* an unknown currency code: fall through */ }
    return formatAmount(s, locale) + " " + code;
  }

  function formatPercent(ratio, locale) {
    return cached("p|" + locale, function () {
      return new Intl.NumberFormat(safeLocale(locale), { style: "percent", maximumFractionDigits: 1 });
    }).format(ratio);
  }

  // Dates in the viewer's locale and time zone. `utc` keeps a UTC bucket's calendar date
  // (a day that starts at 00:00 UTC must not show as the day before in America).
  function formatDate(iso, locale, style) {
    if (!iso) return "";
    var d = new Date(iso);
    if (isNaN(d.getTime())) return String(iso);
    var opts = {
      datetime: { dateStyle: "medium", timeStyle: "short" },
      date: { dateStyle: "medium" },
      hour: { month: "short", day: "numeric", hour: "numeric", minute: "2-digit" },
      day: { month: "short", day: "numeric", timeZone: "UTC" },
      dayLong: { dateStyle: "medium", timeZone: "UTC" },
      month: { year: "numeric", month: "short", timeZone: "UTC" },
      time: { timeStyle: "short" }
    }[style || "datetime"];
    return cached("d|" + locale + "|" + (style || "datetime"), function () {
      return new Intl.DateTimeFormat(safeLocale(locale), opts);
    }).format(d);
  }

  // The unit name for an amount: singular where the locale's plural rules say "one".
  function unitName(currency, value, texts) {
    var u = currency && currency.units;
    var one = cached("pl|" + texts.locale, function () {
      return new Intl.PluralRules(safeLocale(texts.locale));
    }).select(Math.abs(Number(value))) === "one";
    if (u && (u.singular || u.plural)) return one ? (u.singular || u.plural) : (u.plural || u.singular);
    if (currency && currency.symbol) return currency.symbol;
    return one ? texts.t("unitSingular") : texts.t("unitPlural");
  }

  // An amount as a <data> element: the text is the formatted amount with its unit, `value`
  // is the API's exact number (for scripts and tests).
  function amountNode(value, currency, texts, opts) {
    opts = opts || {};
    var num = formatAmount(value, texts.locale, opts);
    var text = opts.noUnit ? num
      : texts.t("amountWithUnit", { amount: num, unit: unitName(currency, value, texts) });
    return h("data", { "class": "amount", value: Dec.plain(value), part: "amount" }, text);
  }
  function amountText(value, currency, texts, opts) {
    return amountNode(value, currency, texts, opts).textContent;
  }

  /* ======================================================================================
   * DOM helpers: elements are built with createElement, attributes with setAttribute and
   * text with text nodes, so data from the API can never become markup.
   * ====================================================================================== */
  function h(tag, attrs) {
    var el = document.createElement(tag);
    if (attrs) {
      Object.keys(attrs).forEach(function (k) {
        var v = attrs[k];
        if (v == null || v === false) return;
        if (k.slice(0, 2) === "on" && typeof v === "function") el.addEventListener(k.slice(2), v);
        else el.setAttribute(k, v === true ? "" : String(v));
      });
    }
    for (var i = 2; i < arguments.length; i++) append(el, arguments[i]);
    return el;
  }
  function append(el, child) {
    if (child == null || child === false) return;
    if (Array.isArray(child)) child.forEach(function (c) { append(el, c); });
    else if (child instanceof Node) el.appendChild(child);
    else el.appendChild(document.createTextNode(String(child)));
  }
  function heading(level, text) {
    var n = Math.min(6, Math.max(1, parseInt(level, 10) || 2));
    return h("h" + n, { "class": "title", part: "title" }, text);
  }

  /* ======================================================================================
   * API client: GET/POST with `Authorization: Bearer <token>` or `X-API-KEY`, exact
   * numbers, errors as CreditdError {status, code, message, field}; a 429 is retried after
   * its Retry-After (twice at most, a few seconds each).
   * ====================================================================================== */
  function CreditdError(status, code, message, field, retryAfter) {
    var e = new Error(message || code || ("HTTP " + status));
    e.name = "CreditdError";
    e.status = status; e.code = code || null; e.field = field || null;
    e.retryAfter = retryAfter || null;
    return e;
  }

  function sleep(ms) { return new Promise(function (r) { setTimeout(r, ms); }); }

  function createClient(opts) {
    var baseUrl = (opts.baseUrl || defaultBaseUrl()).replace(/\/+$/, "");
    function headers(extra) {
      var hd = Object.assign({ Accept: "application/json" }, extra || {});
      if (opts.token) hd.Authorization = "Bearer " + opts.token;
      else if (opts.apiKey) hd["X-API-KEY"] = opts.apiKey;
      return hd;
    }
    function url(path, query) {
      var u = new URL(baseUrl + path);
      if (query) {
        Object.keys(query).forEach(function (k) {
          var v = query[k];
          if (v != null && v !== "") u.searchParams.set(k, String(v));
        });
      }
      return u.toString();
    }
    async function request(method, path, o) {
      o = o || {};
      var init = { method: method, headers: headers(o.headers), signal: o.signal,
                   credentials: "omit", cache: "no-store" };
      if (o.body !== undefined) {
        init.headers["Content-Type"] = "application/json";
        init.body = typeof o.body === "string" ? o.body : JSON.stringify(o.body);
      }
      for (var attempt = 0; ; attempt++) {
        var res;
        try {
          res = await fetch(url(path, o.query), init);
        } catch (err) {
          if (err && err.name === "AbortError") throw err;
          throw CreditdError(0, "NetworkError", String(err && err.message || err));
        }
        var text = await res.text();
        var body = null;
        if (text) {
          try { body = exactNumbers(text); } catch (e) { body = null; }
        }
        if (res.ok) return body;
        var retryAfter = parseInt(res.headers.get("Retry-After") || "", 10) || null;
        if (res.status === 429 && attempt < 2 && !o.noRetry) {
          await sleep(Math.min(retryAfter || 1, 5) * 1000);
          continue;
        }
        var b = body && typeof body === "object" ? body : {};
        throw CreditdError(res.status, b.code, b.message || text.slice(0, 200), b.field, retryAfter);
      }
    }
    return {
      baseUrl: baseUrl,
      request: request,
      get: function (path, query, o) { return request("GET", path, Object.assign({ query: query }, o)); },
      post: function (path, body, o) { return request("POST", path, Object.assign({ body: body }, o)); },
      // Every page of a list (cursor `next`), up to maxPages; {items, truncated}.
      all: async function (path, query, maxPages, o) {
        var items = [], after = null, pages = 0;
        for (;;) {
          var r = await request("GET", path, Object.assign({ query: Object.assign({}, query, { limit: 100, after: after }) }, o));
          items = items.concat(r.data || []);
          after = r.pagination && r.pagination.next;
          if (!after) return { items: items, truncated: false };
          if (++pages >= (maxPages || 20)) return { items: items, truncated: true };
        }
      },
      // A customer token for the feed (an API key's only way to open it from a browser).
      mintToken: async function (customerId, resourceId, ttlSeconds) {
        var r = await request("POST", "/api/v1/customers/" + encodeURIComponent(customerId) + "/tokens",
                              { body: { resourceId: resourceId || undefined, ttlSeconds: ttlSeconds || 900 } });
        return r.data;
      },
      feedUrl: function (query) {
        var u = new URL(url("/api/v1/credits/stream", query));
        u.protocol = u.protocol === "https:" ? "wss:" : "ws:";
        return u.toString();
      }
    };
  }

  // GET /api/v1/portal/session, once per token: which customer (and resource) it reads.
  var sessions = new Map();
  function sessionFor(client, token) {
    var key = client.baseUrl + "|" + token;
    if (!sessions.has(key)) {
      var p = client.get("/api/v1/portal/session").then(function (r) { return r.data; });
      p.catch(function () { sessions.delete(key); });
      sessions.set(key, p);
    }
    return sessions.get(key);
  }

  // The customer's credit types (names, symbols, unit names), shared by the elements.
  var currencyLists = new Map();
  function currenciesFor(client, ctxKey) {
    if (!currencyLists.has(ctxKey)) {
      var p = client.all("/api/v1/credits/custom-currencies", { status: "ACTIVE,ARCHIVED" }, 5)
        .then(function (r) {
          var m = new Map();
          r.items.forEach(function (c) { m.set(c.id, { currencyId: c.id, displayName: c.displayName,
                                                       symbol: c.symbol, units: c.units }); });
          return m;
        });
      p.catch(function () { currencyLists.delete(ctxKey); });
      currencyLists.set(ctxKey, p);
      setTimeout(function () { currencyLists.delete(ctxKey); }, 60000); // names may change
    }
    return currencyLists.get(ctxKey);
  }

  // The same read asked for by several elements in one go (the page puts them in place at
  // once: the balance card, the chart and auto-recharge all need the pools; utilization and
  // the grants table the grants) is made once. Only reads started in the same task are
  // shared, so a later reload never gets an answer older than the change that caused it.
  // Each caller gets its own copy, and its own abort (the shared request goes on).
  var inFlight = new Map();
  function sharedRead(key, make, signal) {
    var p = inFlight.get(key);
    if (!p) {
      p = make();
      p.catch(function () { /* each caller sees it */ });
      inFlight.set(key, p);
      setTimeout(function () { if (inFlight.get(key) === p) inFlight.delete(key); }, 0);
    }
    return new Promise(function (resolve, reject) {
      if (signal && signal.aborted) return reject(abortError());
      if (signal) signal.addEventListener("abort", function () { reject(abortError()); }, { once: true });
      p.then(function (v) { resolve(copy(v)); }, reject);
    });
  }
  function abortError() {
    try { return new DOMException("The read was aborted.", "AbortError"); }
    catch (e) { var err = new Error("The read was aborted."); err.name = "AbortError"; return err; }
  }
  // Answers hold strings, numbers-as-strings, booleans and null only: a JSON copy is exact.
  function copy(v) { return v == null ? v : JSON.parse(JSON.stringify(v)); }

  /* ======================================================================================
   * Live feed: one websocket per (server, credentials, customer, resource), shared by every
   * element that listens. Resumes with `since=` after any close (docs/feed.md); on 4408 a
   * token holder is told the session expired, an API-key holder mints a new token.
   * ====================================================================================== */
  var feeds = new Map();
  var lastSeq = new Map(); // per server+customer+resource: survives a token renewal

  function feedFor(ctx) {
    var key = [ctx.baseUrl, ctx.token || "", ctx.token ? "" : (ctx.apiKey || ""), ctx.customerId,
               ctx.resourceId || ""].join("|");
    var f = feeds.get(key);
    if (!f) { f = new Feed(key, ctx); feeds.set(key, f); }
    return f;
  }

  function Feed(key, ctx) {
    this.key = key;
    this.seqKey = [ctx.baseUrl, ctx.customerId, ctx.resourceId || ""].join("|");
    this.ctx = ctx;
    this.client = createClient(ctx);
    this.subs = new Set();
    this.ws = null;
    this.status = "connecting";
    this.delay = 500;
    this.timer = null;
    this.watchdog = null;
    this.lastError = null;
    this.snapshot = null; // the latest balances, for a subscriber that joins late
  }
  Feed.prototype.subscribe = function (fn) {
    var self = this;
    this.subs.add(fn);
    clearTimeout(this.idle);
    if (!this.ws && !this.timer && this.status !== "expired" && this.status !== "failed") this.connect();
    fn({ type: "status", status: this.status, error: this.lastError });
    if (this.snapshot) fn(this.snapshot);
    return function () {
      self.subs.delete(fn);
      if (!self.subs.size) {
        // A re-render unsubscribes and subscribes again at once: keep the socket a moment.
        self.idle = setTimeout(function () { if (!self.subs.size) self.stop(); }, 2000);
      }
    };
  };
  Feed.prototype.emit = function (frame) {
    this.subs.forEach(function (fn) { try { fn(frame); } catch (e) { console.error(e); } });
  };
  Feed.prototype.setStatus = function (status, error) {
    this.status = status; this.lastError = error || null;
    this.emit({ type: "status", status: status, error: error || null });
  };
  Feed.prototype.stop = function () {
    clearTimeout(this.timer); clearTimeout(this.watchdog); this.timer = null;
    if (this.ws) { this.ws.onclose = null; this.ws.close(1000, "done"); this.ws = null; }
    feeds.delete(this.key);
  };
  Feed.prototype.retry = function (now) {
    var self = this;
    var wait = now ? 0 : this.delay;
    this.delay = Math.min(this.delay * 2, 30000);
    if (this.status !== "connecting") this.setStatus("reconnecting");
    this.timer = setTimeout(function () { self.timer = null; self.connect(); }, wait + Math.random() * 250);
  };
  Feed.prototype.armWatchdog = function () {
    // The server sends a heartbeat after 15 s of silence; 40 s of nothing means a dead link
    // the browser has not noticed.
    var self = this;
    clearTimeout(this.watchdog);
    this.watchdog = setTimeout(function () { if (self.ws) self.ws.close(4000, "no heartbeat"); }, 40000);
  };
  Feed.prototype.connect = async function () {
    var self = this, ctx = this.ctx, token = ctx.token;
    if (!token) {
      // An operator's API key cannot go in a websocket URL: mint a customer token with it.
      try {
        token = (await this.client.mintToken(ctx.customerId, ctx.resourceId, 900)).token;
      } catch (err) {
        if (err.status === 401 || err.status === 403 || err.status === 404) {
          return this.setStatus("failed", err);
        }
        return this.retry(false);
      }
    }
    if (!this.subs.size) return; // nobody listens any more
    var query = { customerId: ctx.customerId, token: token, resourceId: ctx.resourceId || null };
    var since = lastSeq.get(this.seqKey);
    if (since != null) query.since = since;
    var ws;
    try { ws = new WebSocket(this.client.feedUrl(query)); }
    catch (err) { return this.setStatus("failed", CreditdError(0, "FeedUnavailable", String(err))); }
    this.ws = ws;
    var refusal = null;
    ws.onopen = function () { self.armWatchdog(); };
    ws.onmessage = function (m) {
      self.armWatchdog();
      var frame;
      try { frame = exactNumbers(m.data); } catch (e) { return; }
      if (frame.type === "error") { refusal = frame; return; }
      if (frame.seq != null) {
        var seq = Number(frame.seq), prev = lastSeq.get(self.seqKey);
        if (prev == null || seq > prev || frame.type === "snapshot") lastSeq.set(self.seqKey, seq);
      }
      if (frame.type === "heartbeat" || frame.type === "pong") return;
      if (frame.type === "snapshot") {
        self.delay = 500;
        self.snapshot = frame;
        if (self.status !== "live") self.setStatus("live");
      } else if (self.snapshot) {
        // Keep the cached snapshot current for elements that subscribe later.
        var d = frame.data, b = frame.type === "balance" ? frame
          : d && d.balance && d.currencyId ? Object.assign({ currencyId: d.currencyId, resourceId: d.resourceId || null,
                                                             timestamp: frame.timestamp }, d.balance) : null;
        if (b) {
          var bs = self.snapshot.balances.filter(function (x) {
            return !(x.currencyId === b.currencyId && (x.resourceId || null) === (b.resourceId || null));
          });
          bs.push(b);
          self.snapshot = Object.assign({}, self.snapshot, { balances: bs, reset: false });
        }
      }
      self.emit(frame);
    };
    ws.onclose = function (ev) {
      clearTimeout(self.watchdog);
      self.ws = null;
      if (!self.subs.size) return;
      var code = ev.code;
      var err = CreditdError(0, refusal && refusal.code || ("Close" + code),
                             refusal && refusal.message || ev.reason || "");
      if (code === 4408 || (refusal && refusal.code === "TokenExpired")) {
        if (ctx.token) { err.code = "TokenExpired"; return self.setStatus("expired", err); }
        return self.retry(true); // API key: mint a fresh token
      }
      if (code === 4401) {
        if (ctx.token) { err.code = "Unauthenticated"; return self.setStatus("failed", err); }
        return self.retry(false);
      }
      if (code === 4400 || code === 4403 || code === 4404) return self.setStatus("failed", err);
      if (code === 4429 || code === 1013) self.delay = Math.max(self.delay, 5000);
      self.retry(code === 1000 || code === 1001 || code === 1012 || code === 4409);
    };
  };

  /* ======================================================================================
   * Styles: one stylesheet shared by every element's shadow root.
   * ====================================================================================== */
  var STYLES = [
    ":host{display:block;font-family:var(--creditd-font,inherit);font-size:var(--creditd-font-size,14px);",
    "color:var(--creditd-color,#1f2328);background:var(--creditd-bg,#fff);",
    "border:1px solid var(--creditd-border,#d1d9e0);border-radius:var(--creditd-radius,8px);",
    "padding:var(--creditd-gap,12px);box-sizing:border-box;line-height:1.4}",
    ":host([hidden]){display:none}",
    "*,*::before,*::after{box-sizing:inherit}",
    ".title{font-size:1.1em;margin:0 0 var(--creditd-gap,12px);font-weight:600;display:flex;gap:8px;align-items:center;flex-wrap:wrap}",
    ".muted{color:var(--creditd-muted,#59636e)}",
    ".small{font-size:.86em}",
    ".sr-only{position:absolute!important;width:1px;height:1px;padding:0;margin:-1px;overflow:hidden;clip:rect(0,0,0,0);white-space:nowrap;border:0}",
    ".state{padding:var(--creditd-gap,12px) 0}",
    ".error{color:var(--creditd-danger,#cf222e);background:var(--creditd-danger-bg,#ffebe9);padding:8px 12px;border-radius:calc(var(--creditd-radius,8px)/2);display:flex;gap:12px;align-items:center;flex-wrap:wrap}",
    "button,select,input{font:inherit;color:inherit}",
    "button{cursor:pointer;border:1px solid var(--creditd-border,#d1d9e0);background:var(--creditd-surface,#f6f8fa);border-radius:calc(var(--creditd-radius,8px)/2);padding:4px 10px}",
    "button:disabled{cursor:default;opacity:.5}",
    "button.primary{background:var(--creditd-accent,#0969da);color:var(--creditd-accent-text,#fff);border-color:transparent}",
    "button[aria-pressed=true]{background:var(--creditd-accent,#0969da);color:var(--creditd-accent-text,#fff);border-color:transparent}",
    "select,input{border:1px solid var(--creditd-border,#d1d9e0);border-radius:calc(var(--creditd-radius,8px)/2);padding:3px 6px;background:var(--creditd-bg,#fff)}",
    ":focus-visible{outline:2px solid var(--creditd-focus,#0969da);outline-offset:2px}",
    // A date input's focus is in one of its day / month / year fields, where Chromium does
    // not always count the input itself as focused: the ring follows the fields.
    "input[type=date]:focus-within{outline:2px solid var(--creditd-focus,#0969da);outline-offset:2px}",
    ".cards{display:grid;gap:var(--creditd-gap,12px);grid-template-columns:repeat(auto-fill,minmax(220px,1fr))}",
    ".card{background:var(--creditd-surface,#f6f8fa);border-radius:var(--creditd-radius,8px);padding:var(--creditd-gap,12px);display:flex;flex-direction:column;gap:6px}",
    ".card-title{font-weight:600}",
    ".figure{font-size:var(--creditd-balance-size,2em);font-weight:600;font-variant-numeric:tabular-nums;overflow-wrap:anywhere}",
    ".card[data-overdraft] .figure{color:var(--creditd-danger,#cf222e)}",
    ".warn{color:var(--creditd-warning,#9a6700);background:var(--creditd-warning-bg,#fff8c5);padding:4px 8px;border-radius:4px}",
    ".danger{color:var(--creditd-danger,#cf222e);background:var(--creditd-danger-bg,#ffebe9);padding:4px 8px;border-radius:4px}",
    ".live{font-size:.8em;font-weight:400;color:var(--creditd-muted,#59636e);display:inline-flex;align-items:center;gap:4px}",
    ".live::before{content:'';width:8px;height:8px;border-radius:50%;background:var(--creditd-border,#d1d9e0)}",
    ".live[data-status=live]::before{background:var(--creditd-success,#1a7f37)}",
    ".live[data-status=reconnecting]::before,.live[data-status=connecting]::before{background:var(--creditd-warning,#9a6700)}",
    ".history{margin:0;padding-left:1.2em;font-size:.86em;color:var(--creditd-muted,#59636e)}",
    ".bar{height:10px;border-radius:5px;background:var(--creditd-border,#d1d9e0);overflow:hidden}",
    ".bar>span{display:block;height:100%;background:var(--creditd-accent,#0969da)}",
    ".bar[data-full]>span{background:var(--creditd-danger,#cf222e)}",
    ".toolbar{display:flex;flex-wrap:wrap;gap:8px;align-items:center;margin-bottom:var(--creditd-gap,12px)}",
    ".toolbar fieldset{border:0;padding:0;margin:0;display:flex;gap:4px;flex-wrap:wrap;align-items:center}",
    ".toolbar legend{float:left;margin-right:4px}",
    ".toolbar label{display:inline-flex;gap:4px;align-items:center}",
    ".chart-box{position:relative;height:var(--creditd-chart-height,280px)}",
    ".legend{list-style:none;margin:var(--creditd-gap,12px) 0 0;padding:0;display:flex;flex-wrap:wrap;gap:6px 16px;color:var(--creditd-color,#1f2328)}",
    ".legend button,.legend button[aria-pressed]{border:0;background:none;color:var(--creditd-color,#1f2328);padding:2px 4px;display:inline-flex;gap:6px;align-items:center;text-align:left}",
    ".legend button[aria-pressed=false]{opacity:.45;text-decoration:line-through}",
    ".swatch{width:12px;height:12px;border-radius:2px;flex:none}",
    ".table-wrap{overflow-x:auto}",
    "table{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums}",
    "caption{text-align:left;font-weight:600;padding-bottom:6px}",
    "th,td{text-align:left;padding:6px 8px;border-bottom:1px solid var(--creditd-border,#d1d9e0);vertical-align:top}",
    "th{background:var(--creditd-surface,#f6f8fa);font-weight:600;white-space:nowrap}",
    "td.num,th.num{text-align:right}",
    "td.date{white-space:nowrap}",
    "th button{border:0;background:none;padding:0;font-weight:600;display:inline-flex;gap:4px;align-items:center}",
    "th[aria-sort=ascending] button::after{content:'▲';font-size:.7em}",
    "th[aria-sort=descending] button::after{content:'▼';font-size:.7em}",
    // The pills' text keeps a 4.5:1 contrast on their background (WCAG AA), muted text included.
    ".status{display:inline-block;padding:0 7px;border-radius:10px;font-size:.86em;background:var(--creditd-surface,#f6f8fa);border:1px solid var(--creditd-border,#d1d9e0)}",
    ".status[data-status=ACTIVE]{background:var(--creditd-success-bg,#dafbe1);color:var(--creditd-success,#1a7f37)}",
    ".status[data-status=SCHEDULED],.status[data-status=PAYMENT_PENDING]{background:var(--creditd-warning-bg,#fff8c5);color:var(--creditd-warning,#9a6700)}",
    ".status[data-status=VOIDED],.status[data-status=EXPIRED],.status[data-status=DEPLETED]{color:var(--creditd-muted,#59636e)}",
    ".pager{display:flex;gap:8px;align-items:center;justify-content:flex-end;margin-top:8px}",
    ".neg{color:var(--creditd-danger,#cf222e)}",
    ".onoff{font-weight:600}",
    ".onoff[data-on]{color:var(--creditd-success,#1a7f37)}",
    "code{font-size:.9em;overflow-wrap:anywhere}"
  ].join("\n");

  var sheet = null;
  function adoptStyles(root) {
    // A constructable stylesheet is not a <style> element, so a page whose CSP forbids
    // inline styles still styles the widgets.
    try {
      if (!sheet) { sheet = new CSSStyleSheet(); sheet.replaceSync(STYLES); }
      root.adoptedStyleSheets = [sheet];
    } catch (e) {
      root.appendChild(h("style", null, STYLES));
    }
  }

  /* ======================================================================================
   * Base element: resolves the context (attributes over configure), loads, shows the
   * loading / empty / error states, handles the expired session, keeps focus across
   * re-renders, and listens to the feed when a subclass asks for it.
   * ====================================================================================== */
  var COMMON_ATTRS = ["base-url", "token", "customer-id", "resource-id", "currency-id", "locale", "heading-level"];

  class CreditdElement extends HTMLElement {
    static get observedAttributes() { return COMMON_ATTRS.concat(this.extraAttributes || []); }

    constructor() {
      super();
      this._gen = 0;
      this._apiKey = null;
      this._texts = null;
      this._unsub = null;
      this._pending = false;
      this._abort = null;
    }

    get apiKey() { return this._apiKey; }
    set apiKey(v) { this._apiKey = v || null; this.reload(); }
    get texts() { return this._texts; }
    set texts(v) { this._texts = v || null; this.reload(); }

    connectedCallback() {
      if (!this.shadowRoot) {
        this.attachShadow({ mode: "open" });
        adoptStyles(this.shadowRoot);
        this._root = h("div", { "class": "root", part: "root" });
        this.shadowRoot.appendChild(this._root);
      }
      liveElements.add(this);
      this.reload();
    }

    disconnectedCallback() {
      liveElements.delete(this);
      this._stopFeed();
      this._gen++;
      if (this._abort) this._abort.abort();
    }

    attributeChangedCallback(name, oldValue, newValue) {
      if (oldValue !== newValue && this.shadowRoot) this.reload();
    }

    // Texts with this element's overrides, then configure's, then the defaults.
    _textsApi() {
      var own = this._texts || {}, global = config.texts || {};
      var locale = this.getAttribute("locale") || config.locale || navigator.language || "en";
      return {
        locale: locale,
        t: function (key, vars) {
          var s = own[key] != null ? own[key] : global[key] != null ? global[key] : TEXTS[key] != null ? TEXTS[key] : key;
          if (vars) {
            s = String(s).replace(/\{(\w+)\}/g, function (m, k) { return vars[k] != null ? String(vars[k]) : m; });
          }
          return s;
        }
      };
    }

    // Attributes override configure(); the customer (and resource) of a token come from
    // its session when not given.
    async _context(signal) {
      var a = this.getAttribute.bind(this);
      var ctx = {
        baseUrl: (a("base-url") || config.baseUrl || defaultBaseUrl()).replace(/\/+$/, ""),
        token: a("token") || config.token || null,
        apiKey: this._apiKey || config.apiKey || null,
        customerId: a("customer-id") || config.customerId || null,
        resourceId: a("resource-id") || config.resourceId || null,
        currencyId: a("currency-id") || config.currencyId || null
      };
      if (ctx.token) ctx.apiKey = null; // a token wins: one credential per request
      if (!ctx.token && !ctx.apiKey) throw CreditdError(0, "MissingAuth", "");
      ctx.client = createClient(ctx);
      // The resource is known when given as an attribute or to configure() (null included:
      // a customer-wide token); only then can a token's session be skipped.
      var resourceKnown = !!ctx.resourceId || this.hasAttribute("resource-id") || resourceGiven;
      if (ctx.token && (!ctx.customerId || !resourceKnown)) {
        var s = await sessionFor(ctx.client, ctx.token);
        if (s) {
          ctx.customerId = ctx.customerId || s.customerId;
          ctx.resourceId = ctx.resourceId || s.resourceId || null;
        }
      }
      if (!ctx.customerId) throw CreditdError(0, "MissingCustomer", "");
      ctx.key = [ctx.baseUrl, ctx.token || ctx.apiKey, ctx.customerId, ctx.resourceId || ""].join("|");
      ctx.signal = signal;
      return ctx;
    }

    // Reload. quiet: a live refresh, nothing changes on screen until the new data is in.
    // Otherwise data-state turns "loading" at once (synchronously, so a test that clicks and
    // then waits for "ready" never sees the previous "ready"); the content is replaced by the
    // loading text, except after _softly() (a control of the widget itself was used: the
    // content and the focus stay while the new data loads).
    reload(quiet) {
      var soft = !!this._softNext; // reset by _softly itself: several attributes may change
      if (!quiet) this._setState("loading");
      if (this._pending) {
        this._pendingQuiet = this._pendingQuiet && !!quiet;
        this._pendingSoft = this._pendingSoft && soft;
        return;
      }
      this._pending = true;
      this._pendingQuiet = !!quiet;
      this._pendingSoft = soft;
      var self = this;
      queueMicrotask(function () {
        self._pending = false;
        if (self.isConnected) self._run(self._pendingQuiet, self._pendingSoft);
      });
    }

    _softly(fn) {
      this._softNext = true;
      try { fn(); } finally { this._softNext = false; }
    }

    async _run(quiet, soft) {
      var gen = ++this._gen;
      if (this._abort) this._abort.abort();
      this._abort = new AbortController();
      var tx = this._textsApi();
      if (!this._loadedOnce || (!quiet && !soft)) this._showLoading(tx);
      else if (!quiet) this._root.setAttribute("aria-busy", "true");
      try {
        var ctx = await this._context(this._abort.signal);
        if (gen !== this._gen) return;
        this._ctx = ctx;
        await this.load(ctx, tx, function () { return gen !== this._gen; }.bind(this));
        this._loadedOnce = true;
      } catch (err) {
        if (gen !== this._gen || (err && err.name === "AbortError")) return;
        if (quiet && this._loadedOnce && err && err.code !== "TokenExpired" && err.status !== 401 && err.status !== 403) {
          return; // a live refresh that failed (network, 429): keep what is shown; the next change retries
        }
        if (err && err.code === "MissingAuth" && !this._authWaited) {
          // A host often configures the token a moment after the elements are in the page
          // (after its own fetch): wait for configure() a little before saying it is missing.
          var self = this;
          this._authWaited = true;
          setTimeout(function () { if (gen === self._gen) self.reload(); }, 3000);
          return;
        }
        this._showError(err, tx);
      } finally {
        if (gen === this._gen) this._root.removeAttribute("aria-busy");
      }
    }

    // A throttled quiet reload for live updates (at most one every `ms`).
    _refreshSoon(ms) {
      var self = this;
      if (this._refreshTimer) return;
      this._refreshTimer = setTimeout(function () {
        self._refreshTimer = null;
        if (self.isConnected && self.dataset.state !== "error") self.reload(true);
      }, ms || 1500);
    }

    _setState(state) { if (this.dataset.state !== state) this.dataset.state = state; }

    _showLoading(tx) {
      this._setState("loading");
      this._render([this._heading(tx), h("p", { "class": "state muted", role: "status" }, tx.t("loading"))]);
    }

    _heading(tx, extra) {
      return heading(this.getAttribute("heading-level"), [tx.t(this.constructor.titleKey), extra || null]);
    }

    _showError(err, tx) {
      this._setState("error");
      var code = err && err.code, status = err && err.status, msg;
      var expired = code === "TokenExpired";
      if (expired) msg = tx.t("sessionExpired");
      else if (code === "MissingCustomer") msg = tx.t("missingCustomer");
      else if (code === "MissingAuth") msg = tx.t("missingAuth");
      else if (status === 401) msg = tx.t("unauthenticated");
      else if (status === 403) msg = tx.t("forbidden");
      else if (status === 429) msg = tx.t("rateLimited");
      else if (status === 0) msg = tx.t("errorNetwork");
      else msg = tx.t("errorGeneric", { message: (err && err.message || String(err)) + (err && err.field ? " (" + err.field + ")" : "") });
      var self = this;
      var box = h("div", { "class": "error", role: "alert", part: "error", "data-code": code || null }, h("span", null, msg));
      if (!expired && code !== "MissingCustomer" && code !== "MissingAuth") {
        box.appendChild(h("button", { type: "button", onclick: function () { self.reload(); } }, tx.t("retry")));
      }
      this._render([this._heading(tx), box]);
      if (expired) this._expired();
    }

    _expired() {
      this._stopFeed();
      if (this._expiredFor === this._ctx && this._ctx) return; // tell once per context
      this._expiredFor = this._ctx;
      this.dispatchEvent(new CustomEvent("creditd-token-expired", {
        bubbles: true, composed: true,
        detail: { customerId: this._ctx && this._ctx.customerId || null,
                  resourceId: this._ctx && this._ctx.resourceId || null }
      }));
    }

    // Replace the content, keeping keyboard focus on the control with the same data-focus.
    _render(children) {
      var active = this.shadowRoot.activeElement;
      var focusKey = active && active.getAttribute("data-focus");
      var root = this._root;
      while (root.firstChild) root.removeChild(root.firstChild);
      append(root, children);
      if (focusKey) {
        var again = root.querySelector('[data-focus="' + CSS_escape(focusKey) + '"]');
        if (again && again.disabled) {
          // The control used is disabled now (Next on the last page): a neighbour takes the
          // focus, so a keyboard user is not sent back to the top of the page.
          again = Array.prototype.find.call(again.parentNode.querySelectorAll("[data-focus]"),
                                            function (x) { return !x.disabled; }) || null;
        }
        if (again) again.focus();
      }
    }

    // Feed frames for this element's customer; status frames too.
    _listen(ctx, onFrame) {
      this._stopFeed();
      var self = this;
      var feed = feedFor(ctx);
      this._unsub = feed.subscribe(function (frame) {
        if (frame.type === "status") self.dataset.live = frame.status;
        if (frame.type === "status" && frame.status === "expired") {
          self._showError(frame.error || CreditdError(401, "TokenExpired", ""), self._textsApi());
          return;
        }
        onFrame(frame);
      });
    }

    _stopFeed() {
      if (this._unsub) { this._unsub(); this._unsub = null; }
      clearTimeout(this._refreshTimer); this._refreshTimer = null;
    }

    _emptyOr(tx, isEmpty, emptyKey, content) {
      this._setState(isEmpty ? "empty" : "ready");
      return isEmpty ? h("p", { "class": "state muted", part: "empty" }, tx.t(emptyKey)) : content;
    }
  }

  function sameAmount(a, b) { return a == null || b == null ? a == null && b == null : Dec.cmp(a, b) === 0; }
  function CSS_escape(s) { return window.CSS && CSS.escape ? CSS.escape(s) : String(s).replace(/["\\]/g, "\\$&"); }
  function poolKey(currencyId, resourceId) { return currencyId + "\u0000" + (resourceId || ""); }

  // The customer's pools (GET /api/v1/credits/balance), each with its currency and its low
  // line (lowBalanceAt). Elements loading together share one request.
  async function loadPools(ctx) {
    var q = { customerId: ctx.customerId, currencyId: ctx.currencyId, resourceId: ctx.resourceId };
    var r = await sharedRead(["balance", ctx.key, ctx.currencyId || ""].join("|"), function () {
      return ctx.client.get("/api/v1/credits/balance", q);
    }, ctx.signal);
    return (r.data && r.data.balances) || [];
  }

  // Every grant of the customer (up to 20 pages), shared like the pools.
  function loadGrants(ctx) {
    var q = { customerId: ctx.customerId, currencyId: ctx.currencyId, resourceId: ctx.resourceId };
    return sharedRead(["grants", ctx.key, ctx.currencyId || ""].join("|"), function () {
      return ctx.client.all("/api/v1/credits/grants", q, 20);
    }, ctx.signal);
  }

  // Sorted distinct currencies of the pools (for per-currency widgets without currency-id).
  function currenciesOfPools(pools) {
    var seen = new Map();
    pools.forEach(function (p) { if (!seen.has(p.currency.currencyId)) seen.set(p.currency.currencyId, p.currency); });
    return Array.from(seen.values()).sort(function (a, b) { return currencyLabel(a).localeCompare(currencyLabel(b)); });
  }

  // A currency as the widgets use it: the usage answer names the units `singular` and
  // `plural` at the top, the balance answer and the currency list in `units`.
  function normCurrency(c) {
    if (!c) return null;
    if (!c.units && (c.singular || c.plural)) c = Object.assign({}, c, { units: { singular: c.singular, plural: c.plural } });
    return c;
  }

  function currencyLabel(c) { return (c && (c.displayName || c.currencyId)) || ""; }

  /* ======================================================================================
   * <creditd-balance>: one card per pool (credit type × resource), live over the feed.
   *   The low-balance warning shows when the balance is at or below the pool's own low line
   *   (the API's lowBalanceAt, in the REST answer and in every feed balance: what the
   *   credits.balance.usage_low event means), compared exactly; none when the line is null.
   *   attributes: low-balance (a threshold instead of the pool's line: at or below it the
   *     card warns), add-credits
   *     (shows the "Add credits" button), no-live (no websocket), history (how many recent
   *     changes to list, default 5; 0 hides)
   *   events: creditd-add-credits {customerId, currencyId, resourceId}, creditd-token-expired
   *   host: data-live = connecting | live | reconnecting | expired | failed | off (no-live)
   *   parts: root, title, card, amount, warning, add-credits, history
   *   card: data-currency-id, data-resource-id, data-low, data-overdraft; the figure is
   *     <data class="amount" value="120.5"> inside an aria-live region.
   * ====================================================================================== */
  class CreditdBalance extends CreditdElement {
    static get extraAttributes() { return ["low-balance", "add-credits", "no-live", "history"]; }
    static get titleKey() { return "balanceTitle"; }

    get pools() { return this._pools ? Array.from(this._pools.values()) : []; }

    async load(ctx, tx, stale) {
      var list = await loadPools(ctx);
      if (stale()) return;
      this._pools = new Map();
      this._history = this._history || new Map();
      var self = this;
      list.forEach(function (p) { self._pools.set(poolKey(p.currency.currencyId, p.resourceId), p); });
      this._cards = new Map();
      this._draw(tx);
      if (this.hasAttribute("no-live")) { this.dataset.live = "off"; return; }
      this._listen(ctx, function (frame) { self._onFrame(frame, ctx); });
    }

    _wanted(currencyId, resourceId) {
      var ctx = this._ctx;
      if (ctx.currencyId && currencyId !== ctx.currencyId) return false;
      if (ctx.resourceId && (resourceId || null) !== ctx.resourceId) return false;
      return true;
    }

    _onFrame(frame, ctx) {
      var tx = this._textsApi(), self = this;
      if (frame.type === "status") {
        if (this._liveBadge) this._updateLive(tx);
        if (frame.status === "failed" && frame.error && frame.error.code === "Unauthenticated") {
          this._showError(CreditdError(401, "Unauthenticated", frame.error.message), tx);
        }
        return;
      }
      if (frame.type === "snapshot") {
        var unknown = false;
        frame.balances.forEach(function (b) {
          if (!self._wanted(b.currencyId, b.resourceId)) return;
          if (!self._apply(b, tx)) unknown = true;
        });
        if (unknown) this._reread(tx);
        return;
      }
      if (frame.type === "balance") {
        if (!this._wanted(frame.currencyId, frame.resourceId)) return;
        if (!this._apply(frame, tx)) this._reread(tx);
        return;
      }
      // Events carry the pool's balance after them too; a void, for one, comes as
      // credits.grant.updated without a separate balance frame.
      var ev = frame.data;
      if (ev && ev.balance && ev.currencyId && frame.type.indexOf("credits.") === 0 &&
          this._wanted(ev.currencyId, ev.resourceId)) {
        var fromEvent = Object.assign({ currencyId: ev.currencyId, resourceId: ev.resourceId || null,
                                        timestamp: frame.timestamp }, ev.balance);
        if (!this._apply(fromEvent, tx)) this._reread(tx);
      }
      // The low line itself comes with every balance; a threshold event (usage_low,
      // depleted) is only a cue to read it again, in case a frame without it was the last
      // word (an event's balance does not carry it).
      if (ev && ev.currencyId && frame.type.indexOf("credits.balance.") === 0 &&
          this._wanted(ev.currencyId, ev.resourceId)) {
        this._reread(tx);
      }
    }

    // A balance from the feed onto a known pool; false when the pool is new (its currency's
    // names come from REST).
    _apply(b, tx) {
      var key = poolKey(b.currencyId, b.resourceId);
      var pool = this._pools.get(key);
      if (!pool) return false;
      if (Dec.cmp(pool.currentBalance, b.currentBalance) !== 0) {
        var hist = this._history.get(key) || [];
        hist.unshift({ change: Dec.sub(b.currentBalance, pool.currentBalance), at: b.timestamp || new Date().toISOString() });
        this._history.set(key, hist.slice(0, 20));
      }
      pool.currentBalance = b.currentBalance;
      pool.totalGranted = b.totalGranted;
      pool.totalConsumed = b.totalConsumed;
      pool.reserved = b.reserved;
      if (b.hardLimit != null) pool.hardLimit = b.hardLimit;
      if (b.lowBalanceAt !== undefined) pool.lowBalanceAt = b.lowBalanceAt; // null: cannot be low
      this._updateCard(key, tx);
      return true;
    }

    // Read the pools again (REST): new pools get a card, known ones their low line (the
    // balance itself stays the feed's: a frame may be newer than this answer). One read at
    // a time; a cue that comes during it reads once more after it.
    async _reread(tx) {
      if (this._rereading) { this._rereadAgain = true; return; }
      this._rereading = true;
      var ctx = this._ctx;
      try {
        do {
          this._rereadAgain = false;
          var list = await loadPools(Object.assign({}, ctx, { signal: null }));
          if (ctx !== this._ctx || !this._pools) break;
          var self = this, added = false;
          list.forEach(function (p) {
            var key = poolKey(p.currency.currencyId, p.resourceId), known = self._pools.get(key);
            if (!known) { self._pools.set(key, p); added = true; return; }
            if (p.lowBalanceAt !== undefined && !sameAmount(known.lowBalanceAt, p.lowBalanceAt)) {
              known.lowBalanceAt = p.lowBalanceAt;
              self._updateCard(key, tx);
            }
          });
          if (added) this._draw(tx);
        } while (this._rereadAgain);
      } catch (e) { /* the next frame tries again */ }
      this._rereading = false;
    }

    _draw(tx) {
      var self = this;
      this._liveBadge = h("span", { "class": "live", "data-status": this.dataset.live || "connecting" });
      this._updateLive(tx);
      var pools = Array.from(this._pools.values()).sort(function (a, b) {
        return currencyLabel(a.currency).localeCompare(currencyLabel(b.currency)) ||
          String(a.resourceId || "").localeCompare(String(b.resourceId || ""));
      });
      this._cards = new Map();
      var cards = h("div", { "class": "cards" });
      pools.forEach(function (p) {
        var key = poolKey(p.currency.currencyId, p.resourceId);
        var card = self._card(p, tx);
        self._cards.set(key, card);
        cards.appendChild(card.el);
        self._fillCard(key, tx);
      });
      var body = this._emptyOr(tx, pools.length === 0, "balanceEmpty", cards);
      this._render([this._heading(tx, this.hasAttribute("no-live") ? null : this._liveBadge), body]);
    }

    _updateLive(tx) {
      var s = this.dataset.live || "connecting";
      this._liveBadge.setAttribute("data-status", s);
      this._liveBadge.textContent = tx.t({ live: "liveOn", connecting: "liveConnecting",
                                           reconnecting: "liveReconnecting" }[s] || "liveOff");
    }

    _card(p, tx) {
      var self = this, c = p.currency;
      var label = currencyLabel(c);
      var parts = {
        el: h("section", { "class": "card", part: "card", "data-currency-id": c.currencyId,
                           "data-resource-id": p.resourceId || null,
                           "aria-label": tx.t("balanceCardLabel", { currency: label }) }),
        figure: h("div", { "class": "figure", "aria-live": "polite", "aria-atomic": "true" }),
        notes: h("div", { "class": "notes" }),
        history: h("ol", { "class": "history", part: "history", "aria-label": tx.t("historyTitle") })
      };
      parts.el.appendChild(h("div", { "class": "card-title" }, label));
      if (p.resourceId && !this._ctx.resourceId) {
        parts.el.appendChild(h("div", { "class": "muted small" }, tx.t("balanceResource", { resource: p.resourceId })));
      }
      parts.el.appendChild(parts.figure);
      parts.el.appendChild(parts.notes);
      if (this.hasAttribute("add-credits")) {
        parts.el.appendChild(h("div", null, h("button", {
          type: "button", "class": "primary", part: "add-credits",
          "data-focus": "add:" + c.currencyId + ":" + (p.resourceId || ""),
          "aria-label": tx.t("addCreditsLabel", { currency: label }),
          onclick: function () {
            // Hands off to the host page: the widget itself never moves money.
            self.dispatchEvent(new CustomEvent("creditd-add-credits", {
              bubbles: true, composed: true,
              detail: { customerId: self._ctx.customerId, currencyId: c.currencyId,
                        resourceId: p.resourceId || null }
            }));
          }
        }, tx.t("addCredits"))));
      }
      parts.el.appendChild(parts.history);
      return parts;
    }

    // At or below the low line, exactly: the `low-balance` attribute when it is a number,
    // else the pool's own line (lowBalanceAt; null or absent: never low).
    _isLow(key, p) {
      var threshold = this.getAttribute("low-balance");
      if (threshold != null && threshold.trim() !== "" && !isNaN(Number(threshold))) {
        return Dec.cmp(p.currentBalance, threshold) <= 0;
      }
      return p.lowBalanceAt != null && Dec.cmp(p.currentBalance, p.lowBalanceAt) <= 0;
    }

    _fillCard(key, tx) {
      var card = this._cards.get(key), p = this._pools.get(key);
      if (!card || !p) return;
      var c = p.currency;
      var overdraft = Dec.sign(p.currentBalance) < 0;
      var depleted = Dec.sign(p.currentBalance) === 0 && Dec.sign(p.totalGranted || "0") > 0;
      var low = !overdraft && !depleted && this._isLow(key, p);
      card.el.toggleAttribute("data-low", low);
      card.el.toggleAttribute("data-overdraft", overdraft);
      var fig = card.figure;
      while (fig.firstChild) fig.removeChild(fig.firstChild);
      fig.appendChild(amountNode(p.currentBalance, c, tx));
      var notes = card.notes;
      while (notes.firstChild) notes.removeChild(notes.firstChild);
      if (overdraft) {
        notes.appendChild(h("div", { "class": "danger", role: "status", part: "warning" },
          tx.t("balanceOverdraft", { amount: amountText(Dec.abs(p.currentBalance), c, tx) })));
      } else if (depleted) {
        notes.appendChild(h("div", { "class": "danger", role: "status", part: "warning" }, tx.t("balanceDepleted")));
      } else if (low) {
        notes.appendChild(h("div", { "class": "warn", role: "status", part: "warning" }, tx.t("balanceLow")));
      }
      if (p.reserved != null && Dec.sign(p.reserved) > 0) {
        notes.appendChild(h("div", { "class": "muted small" }, tx.t("balanceReserved", { amount: amountText(p.reserved, c, tx) })));
      }
      // A short history: the changes seen live since the page opened.
      var n = this.hasAttribute("history") ? parseInt(this.getAttribute("history"), 10) : 5;
      var hist = (this._history.get(key) || []).slice(0, isNaN(n) ? 5 : Math.max(0, n));
      var ol = card.history;
      while (ol.firstChild) ol.removeChild(ol.firstChild);
      ol.hidden = hist.length === 0;
      hist.forEach(function (e) {
        ol.appendChild(h("li", null, tx.t("historyItem", {
          change: amountText(e.change, c, tx, { signed: true }), time: formatDate(e.at, tx.locale, "time") })));
      });
    }

    _updateCard(key, tx) {
      if (this._cards && this._cards.has(key)) this._fillCard(key, tx);
    }
  }

  /* ======================================================================================
   * <creditd-utilization>: per credit type, used / total of the ACTIVE grants, what
   * remains, a progress bar. Refreshes (throttled) when the feed reports a change.
   *   attributes: no-live
   *   parts: root, title, card, amount, bar
   *   card: data-currency-id, data-used, data-total (exact), progressbar with aria-valuenow
   * ====================================================================================== */
  class CreditdUtilization extends CreditdElement {
    static get extraAttributes() { return ["no-live"]; }
    static get titleKey() { return "utilizationTitle"; }

    async load(ctx, tx, stale) {
      var results = await Promise.all([
        loadGrants(ctx),
        currenciesFor(ctx.client, ctx.key)
      ]);
      if (stale()) return;
      var grants = results[0].items, names = results[1];
      // Sum per currency, exactly; an overdraft line is not a grant the customer holds.
      var per = new Map();
      grants.forEach(function (g) {
        if (g.status !== "ACTIVE" || g.grantType === "OVERDRAFT") return;
        var u = per.get(g.currencyId) || { used: "0", total: "0" };
        u.used = Dec.add(u.used, g.consumedAmount);
        u.total = Dec.add(u.total, g.amount);
        per.set(g.currencyId, u);
      });
      var self = this;
      var ids = Array.from(per.keys()).sort(function (a, b) {
        return currencyLabel(names.get(a) || { currencyId: a }).localeCompare(currencyLabel(names.get(b) || { currencyId: b }));
      });
      this.utilization = ids.map(function (id) {
        var u = per.get(id);
        return { currencyId: id, used: u.used, total: u.total, remaining: Dec.sub(u.total, u.used) };
      });
      var cards = h("div", { "class": "cards" });
      this.utilization.forEach(function (u) {
        var c = names.get(u.currencyId) || { currencyId: u.currencyId };
        var ratio = Dec.ratio(u.used, u.total);
        var pct = formatPercent(ratio, tx.locale);
        var bar = h("div", { "class": "bar", part: "bar", role: "progressbar", "aria-valuemin": 0,
                             "aria-valuemax": 100, "aria-valuenow": Math.round(ratio * 1000) / 10,
                             "aria-valuetext": tx.t("utilizationPercent", { percent: pct }),
                             "aria-label": tx.t("utilizationBar", { currency: currencyLabel(c), percent: pct }),
                             "data-full": ratio >= 1 || null },
                        h("span"));
        bar.firstChild.style.width = (ratio * 100).toFixed(2) + "%";
        cards.appendChild(h("section", { "class": "card", part: "card", "data-currency-id": u.currencyId,
                                         "data-used": u.used, "data-total": u.total,
                                         "aria-label": currencyLabel(c) },
          h("div", { "class": "card-title" }, currencyLabel(c)),
          h("div", null, tx.t("utilizationUsed", { used: "\u0001", total: "\u0002" }).split(/([\u0001\u0002])/).map(function (s) {
            return s === "\u0001" ? amountNode(u.used, c, tx) : s === "\u0002" ? amountNode(u.total, c, tx) : s;
          })),
          bar,
          h("div", { "class": "muted small" },
            tx.t("utilizationRemaining", { amount: amountText(u.remaining, c, tx) }), " · ",
            tx.t("utilizationPercent", { percent: pct }))));
      });
      this._render([this._heading(tx), this._emptyOr(tx, ids.length === 0, "utilizationEmpty", cards)]);
      if (!this.hasAttribute("no-live")) {
        this._listen(ctx, function (frame) {
          if (frame.type === "balance" || (frame.type && frame.type.indexOf("credits.") === 0)) self._refreshSoon(1500);
        });
      }
    }
  }

  /* ======================================================================================
   * <creditd-usage-chart>: credits used per hour/day/week/month, stacked per feature or per
   * dimension value (Chart.js, loaded lazily from vendor/), with legend totals (the API's
   * totalCredits), range presets, a custom range, CSV export and a hidden data table.
   *   attributes: group-by (featureId | dimension key(s), comma separated; default
   *     featureId), granularity (hour|day|week|month; default: the server's choice by range),
   *     range (24h|7d|30d|12m|custom; default 30d), start / end (custom: ISO dates, UTC;
   *     the end date is included), no-controls (hides the toolbar)
   *   properties: series (the API's series, amounts as exact strings), chart (the Chart.js
   *     instance or null), granularityShown, toCSV(), exportCsv()
   *   events: creditd-usage-loaded {series, start, end, granularity}
   *   parts: root, title, toolbar, chart, legend, table
   * ====================================================================================== */
  var PALETTE = ["#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#f0e442",
                 "#6a3d9a", "#8c8c8c", "#1b9e77"];
  var RANGES = ["24h", "7d", "30d", "12m"];
  var HOUR = 3600000, DAY = 24 * HOUR;

  var chartLoading = null;
  function loadChartJs() {
    if (window.Chart && /^4\./.test(window.Chart.version || "")) return Promise.resolve(window.Chart);
    if (!chartLoading) {
      chartLoading = new Promise(function (resolve, reject) {
        var src;
        try {
          var own = new URL(SCRIPT_SRC || location.href);
          src = new URL("vendor/chart.umd.js", own);
          src.search = own.search; // the same ?v=<hash>: cached as long as this file
        } catch (e) { src = "vendor/chart.umd.js"; }
        var s = document.createElement("script");
        s.src = String(src);
        s.async = true;
        s.fetchPriority = "high"; // needed for the first picture, like the data
        s.onload = function () { window.Chart ? resolve(window.Chart) : reject(new Error("Chart.js did not load")); };
        s.onerror = function () { chartLoading = null; reject(new Error("Chart.js did not load")); };
        document.head.appendChild(s);
      });
    }
    return chartLoading;
  }

  // Charts redraw their colours when the page's theme changes: the viewer's colour scheme,
  // or a class / data-theme / style on <html> or <body>.
  var themeWatched = false;
  function watchTheme() {
    if (themeWatched) return;
    themeWatched = true;
    var queued = false;
    function again() {
      if (queued) return;
      queued = true;
      requestAnimationFrame(function () {
        queued = false;
        liveElements.forEach(function (el) { if (el._restyle) el._restyle(); });
      });
    }
    try { window.matchMedia("(prefers-color-scheme: dark)").addEventListener("change", again); } catch (e) { /* old browser */ }
    try {
      var mo = new MutationObserver(again), opts = { attributes: true, attributeFilter: ["class", "style", "data-theme"] };
      mo.observe(document.documentElement, opts);
      if (document.body) mo.observe(document.body, opts);
    } catch (e) { /* no observer: colours stay as drawn */ }
  }

  function utcMidnight(ms) { return ms - (((ms % DAY) + DAY) % DAY); }
  function utcMonthStart(ms, back) {
    var d = new Date(ms);
    return Date.UTC(d.getUTCFullYear(), d.getUTCMonth() - (back || 0), 1);
  }
  // "2026-03-05" (or a full ISO time) as epoch ms, UTC; NaN when invalid.
  function parseDay(s) {
    if (!s) return NaN;
    return /^\d{4}-\d{2}-\d{2}$/.test(s) ? Date.parse(s + "T00:00:00Z") : Date.parse(s);
  }
  function isoDay(ms) { return new Date(ms).toISOString().slice(0, 10); }

  function csvCell(v) {
    var s = v == null ? "" : String(v);
    // A spreadsheet runs a cell starting with = + - @ as a formula: names from the API are
    // data, so such text gets a leading apostrophe (numbers are left as they are).
    if (/^[=+\-@\t\r]/.test(s) && isNaN(Number(s))) s = "'" + s;
    return /[",\n\r]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s;
  }

  class CreditdUsageChart extends CreditdElement {
    static get extraAttributes() { return ["group-by", "granularity", "range", "start", "end", "no-controls"]; }
    static get titleKey() { return "usageTitle"; }

    constructor() { super(); this.series = []; this.chart = null; this.granularityShown = null; this._hidden = new Set(); }

    connectedCallback() {
      // Chart.js is asked for first, before this or any other element starts its reads, so
      // it loads alongside the data instead of queueing behind it.
      loadChartJs().catch(function () { /* drawn without it: see _drawChart */ });
      super.connectedCallback();
    }

    disconnectedCallback() {
      super.disconnectedCallback();
      if (this.chart) { this.chart.destroy(); this.chart = null; }
    }

    // [start, end) in epoch ms for the range; presets end now and start on a whole bucket
    // (24 hours, 7 or 30 days including today, 12 months including this one), UTC.
    _window() {
      var range = (this.getAttribute("range") || "30d").toLowerCase();
      var now = Date.now();
      if (range === "custom") {
        var s = parseDay(this.getAttribute("start")), e = this.getAttribute("end");
        var end = parseDay(e);
        if (!isNaN(end) && /^\d{4}-\d{2}-\d{2}$/.test(e)) end += DAY; // the end date is included
        if (isNaN(end)) end = now;
        if (isNaN(s)) s = end - 30 * DAY;
        return { range: range, start: s, end: end };
      }
      if (range === "24h") return { range: range, start: now - (now % HOUR) - 23 * HOUR, end: now };
      if (range === "7d") return { range: range, start: utcMidnight(now) - 6 * DAY, end: now };
      if (range === "12m") return { range: range, start: utcMonthStart(now, 11), end: now };
      return { range: "30d", start: utcMidnight(now) - 29 * DAY, end: now };
    }

    async load(ctx, tx, stale) {
      var self = this;
      var w = this._window();
      loadChartJs().catch(function () { /* drawn without it: see _drawChart */ });
      var groupBy = this.getAttribute("group-by") || "featureId";
      var gran = (this.getAttribute("granularity") || "").toUpperCase() || null;
      var base = { customerId: ctx.customerId, resourceId: ctx.resourceId,
                   startDate: new Date(w.start).toISOString(), endDate: new Date(w.end).toISOString(),
                   groupBy: groupBy, granularity: gran };
      // Everything this chart reads starts at once: Chart.js (above), the dimension keys,
      // the first page of usage and, without currency-id, the customer's pools (the
      // balance card's request, shared).
      var dims = ctx.client.get("/api/v1/credits/usage/dimensions", { customerId: ctx.customerId, resourceId: ctx.resourceId, limit: 100 },
                                { signal: ctx.signal }).then(function (r) { return r.data.keys || []; },
                                                             function () { return []; });
      function firstPage(currencyId) {
        var q = Object.assign({}, base, { currencyId: currencyId });
        if (w.start >= w.end) {
          return Promise.resolve({ q: q, err: CreditdError(400, "BadUserInput", tx.t("rangeInvalid"), "startDate") });
        }
        return ctx.client.get("/api/v1/credits/usage", Object.assign({ limit: 100 }, q), { signal: ctx.signal })
          .then(function (r) { return { q: q, r: r }; }, function (err) { return { q: q, err: err }; });
      }
      // The chart shows one credit type: the given one, else the one picked before, else the
      // customer's first (a picker when there are several). Before the pools are known the
      // usage is asked for with that guess, or with no currency (the server then names the
      // one credit type it found, which is the answer when it is the one shown).
      var guess = ctx.currencyId || this._pickedCurrency || null;
      var pending = firstPage(guess);
      var currencyId = guess, currencies = [];
      if (!ctx.currencyId) {
        currencies = currenciesOfPools(await loadPools(ctx));
        if (stale()) return;
        if (!currencies.some(function (c) { return c.currencyId === currencyId; })) {
          currencyId = currencies.length ? currencies[0].currencyId : null;
        }
      }
      var got = await pending;
      if (stale()) return;
      if (!answersFor(got, currencyId)) {
        got = await firstPage(currencyId);
        if (stale()) return;
      }
      var query = Object.assign({}, base, { currencyId: currencyId });
      // Series are paged inside `data` (largest first): read up to 500.
      var series = [], first = null, after = null;
      try {
        if (got.err) throw got.err;
        first = got.r.data || {};
        series = first.series || [];
        after = first.pagination && first.pagination.next;
        for (var pageNo = 1; after && pageNo < 5; pageNo++) {
          var r = await ctx.client.get("/api/v1/credits/usage", Object.assign({}, got.q, { limit: 100, after: after }),
                                       { signal: ctx.signal });
          if (stale()) return;
          series = series.concat((r.data && r.data.series) || []);
          after = r.data && r.data.pagination && r.data.pagination.next;
        }
      } catch (err) {
        if (err.status !== 400) throw err;
        // A range or granularity the server refuses (more than 2,000 points, start after
        // end): say why and keep the controls, so another choice can be made.
        var known = await dims;
        if (stale()) return;
        this.series = []; this._query = query;
        if (this.chart) { this.chart.destroy(); this.chart = null; }
        this._setState("error");
        this._render([this._heading(tx),
          this.hasAttribute("no-controls") ? null : this._toolbar(tx, { keys: known, currencies: currencies, currencyId: currencyId,
                                                                          groupBy: groupBy, w: w, gran: gran }),
          h("div", { "class": "error", role: "alert", part: "error", "data-code": err.code || null },
            tx.t("errorGeneric", { message: err.message + (err.field ? " (" + err.field + ")" : "") }))]);
        return;
      }
      var keys = await dims;
      if (stale()) return;
      this.series = series;
      this.currency = normCurrency(first.currency) ||
        (currencies.find(function (c) { return c.currencyId === currencyId; }) || null);
      this._query = query;
      var labels = (series[0] && series[0].points || []).map(function (p) { return p.timestamp; });
      this.granularityShown = gran || inferGranularity(labels, w);
      this._labels = labels;
      await this._drawAll(ctx, tx, { keys: keys, currencies: currencies, currencyId: currencyId, groupBy: groupBy, w: w, gran: gran });
      if (stale()) return;
      this.dispatchEvent(new CustomEvent("creditd-usage-loaded", {
        bubbles: true, composed: true,
        detail: { series: series, start: query.startDate, end: query.endDate, granularity: this.granularityShown } }));
    }

    _seriesLabel(s, tx) {
      var parts = [];
      var byFeature = (this._query.groupBy || "").split(",").map(function (k) { return k.trim(); }).indexOf("featureId") >= 0;
      if (byFeature) parts.push(s.featureName || s.featureId || tx.t("seriesDirect"));
      (s.tags || []).forEach(function (t) { parts.push(t.key + ": " + (t.value === "" ? tx.t("tagEmpty") : t.value)); });
      return parts.join(" · ") || tx.t("seriesDirect");
    }

    _color(i) {
      var v = getComputedStyle(this).getPropertyValue("--creditd-chart-" + ((i % 10) + 1)).trim();
      return v || PALETTE[i % PALETTE.length];
    }

    _periodLabel(iso, tx) {
      var g = this.granularityShown;
      if (g === "HOUR") return formatDate(iso, tx.locale, "hour");
      if (g === "WEEK") return tx.t("weekOf", { date: formatDate(iso, tx.locale, "day") });
      if (g === "MONTH") return formatDate(iso, tx.locale, "month");
      return formatDate(iso, tx.locale, "day");
    }

    // "ready" once the bars are drawn (el.chart set), so a test that waits for it finds them.
    async _drawAll(ctx, tx, o) {
      var self = this, series = this.series, c = this.currency;
      var children = [this._heading(tx)];
      if (!this.hasAttribute("no-controls")) children.push(this._toolbar(tx, o));
      var total = Dec.sum(series.map(function (s) { return s.totalCredits; }));
      var empty = series.length === 0 || Dec.sign(total) === 0;
      if (empty) {
        if (this.chart) { this.chart.destroy(); this.chart = null; }
        children.push(this._emptyOr(tx, true, "usageEmpty"));
        this._render(children);
        return;
      }
      var gName = tx.t("granularity" + cap(this.granularityShown || "day"));
      var canvas = h("canvas", { role: "img", "aria-label": tx.t("chartLabel", {
        granularity: gName.toLowerCase(), groupBy: this._groupByName(o.groupBy, tx).toLowerCase(),
        count: series.length, total: amountText(total, c, tx) }) });
      var box = h("div", { "class": "chart-box", part: "chart" }, canvas);
      children.push(box);
      // Legend: each series' total for the range (the API's own totalCredits), a toggle.
      var legend = h("ul", { "class": "legend", part: "legend", "aria-label": tx.t("legendTitle") });
      series.forEach(function (s, i) {
        var label = self._seriesLabel(s, tx);
        var key = seriesKey(s);
        legend.appendChild(h("li", { "data-series": key },
          h("button", { type: "button", "aria-pressed": String(!self._hidden.has(key)), "data-focus": "legend:" + key,
                        "aria-label": tx.t("legendToggle", { series: label }) + ": " + amountText(s.totalCredits, c, tx),
                        onclick: function () { self._toggle(key, i, this); } },
            h("span", { "class": "swatch", "aria-hidden": "true" }),
            h("span", null, label), " ",
            h("strong", null, amountNode(s.totalCredits, c, tx)))));
        legend.lastChild.querySelector(".swatch").style.background = self._color(i);
      });
      children.push(legend);
      children.push(this._table(tx));
      this._render(children);
      var gen = this._gen;
      await this._drawChart(canvas, tx, box);
      if (gen === this._gen) this._setState("ready");
    }

    _groupByName(g, tx) {
      return g === "featureId" ? tx.t("groupByFeature") : g;
    }

    _toggle(key, i, button) {
      if (this._hidden.has(key)) this._hidden.delete(key); else this._hidden.add(key);
      button.setAttribute("aria-pressed", String(!this._hidden.has(key)));
      if (this.chart) { this.chart.setDatasetVisibility(i, !this._hidden.has(key)); this.chart.update(); }
    }

    async _drawChart(canvas, tx, box) {
      var self = this, series = this.series, gen = this._gen, c = this.currency;
      if (this.chart) { this.chart.destroy(); this.chart = null; }
      var Chart;
      try { Chart = await loadChartJs(); }
      catch (e) {
        box.replaceWith(h("p", { "class": "muted" }, tx.t("chartUnavailable")));
        return;
      }
      if (gen !== this._gen || !canvas.isConnected) return;
      var theme = this._themeColors(), color = theme.muted, grid = theme.grid;
      watchTheme();
      this.chart = new Chart(canvas, {
        type: "bar",
        data: {
          labels: this._labels.map(function (l) { return self._periodLabel(l, tx); }),
          datasets: series.map(function (s, i) {
            return {
              label: self._seriesLabel(s, tx),
              // Numbers for drawing only; the tooltip shows the exact strings.
              data: s.points.map(function (p) { return Number(p.value); }),
              exact: s.points.map(function (p) { return p.value; }),
              backgroundColor: self._color(i),
              hidden: self._hidden.has(seriesKey(s)),
              stack: "usage"
            };
          })
        },
        options: {
          responsive: true, maintainAspectRatio: false, animation: false,
          color: theme.text, // any text Chart.js itself draws (its legend, if a host turns it on)
          interaction: { mode: "index", intersect: false },
          scales: {
            x: { stacked: true, ticks: { color: color, autoSkip: true, maxRotation: 0 }, grid: { display: false } },
            y: { stacked: true, beginAtZero: true, ticks: { color: color,
                 callback: function (v) { return formatAmount(Dec.plain(String(v)), tx.locale); } },
                 grid: { color: grid } }
          },
          plugins: {
            legend: { display: false },
            tooltip: { callbacks: { label: function (item) {
              var exact = item.dataset.exact[item.dataIndex];
              return item.dataset.label + ": " + amountText(exact, c, tx);
            } } }
          }
        }
      });
    }

    // The theme's colours, read from the custom properties (they inherit into the element).
    _themeColors() {
      var cs = getComputedStyle(this);
      return { text: cs.getPropertyValue("--creditd-color").trim() || cs.color || "#1f2328",
               muted: cs.getPropertyValue("--creditd-muted").trim() || "#59636e",
               grid: cs.getPropertyValue("--creditd-border").trim() || "#d1d9e0" };
    }

    // The page's theme changed (dark mode, a class on <html>): the canvas is not styled by
    // CSS, so its colours are set again; the HTML legend follows by itself.
    _restyle() {
      var self = this, chart = this.chart;
      if (!chart) return;
      var theme = this._themeColors(), o = chart.options;
      o.color = theme.text;
      o.scales.x.ticks.color = theme.muted;
      o.scales.y.ticks.color = theme.muted;
      o.scales.y.grid.color = theme.grid;
      chart.data.datasets.forEach(function (d, i) { d.backgroundColor = self._color(i); });
      Array.prototype.forEach.call(this.shadowRoot.querySelectorAll(".legend .swatch"), function (sw, i) {
        sw.style.background = self._color(i);
      });
      chart.update("none");
    }

    // The same numbers for screen readers: a row per period, a column per series.
    _table(tx) {
      var self = this, c = this.currency;
      var head = h("tr", null, h("th", { scope: "col" }, tx.t("periodHeader")),
        this.series.map(function (s) { return h("th", { scope: "col", "class": "num" }, self._seriesLabel(s, tx)); }));
      var rows = this._labels.map(function (iso, j) {
        return h("tr", null, h("th", { scope: "row" }, h("time", { datetime: iso }, self._periodLabel(iso, tx))),
          self.series.map(function (s) { return h("td", { "class": "num" }, amountNode(s.points[j].value, c, tx, { noUnit: true })); }));
      });
      var totals = h("tr", null, h("th", { scope: "row" }, tx.t("totalHeader")),
        this.series.map(function (s) { return h("td", { "class": "num" }, amountNode(s.totalCredits, c, tx, { noUnit: true })); }));
      return h("table", { "class": "sr-only", part: "table" },
        h("caption", null, tx.t("usageTableCaption")), h("thead", null, head), h("tbody", null, rows), h("tfoot", null, totals));
    }

    _toolbar(tx, o) {
      var self = this, w = o.w;
      var bar = h("div", { "class": "toolbar", part: "toolbar" });
      var presets = h("fieldset", null, h("legend", { "class": "muted" }, tx.t("rangeLabel")));
      RANGES.concat(["custom"]).forEach(function (r) {
        presets.appendChild(h("button", {
          type: "button", "aria-pressed": String(w.range === r), "data-range": r, "data-focus": "range:" + r,
          onclick: function () {
            if (r === "custom") {
              if (!self.getAttribute("start")) {
                self._softly(function () {
                  self.setAttribute("start", isoDay(w.start));
                  self.setAttribute("end", isoDay(Math.max(w.start, w.end - 1)));
                });
              }
            }
            self._softly(function () { self.setAttribute("range", r); });
          }
        }, tx.t("range" + (r === "custom" ? "Custom" : r))));
      });
      bar.appendChild(presets);
      if (w.range === "custom") {
        var from = h("input", { type: "date", value: isoDay(w.start), "data-focus": "from", required: true });
        var to = h("input", { type: "date", value: isoDay(Math.max(w.start, w.end - 1)), "data-focus": "to", required: true });
        var form = h("form", { "class": "toolbar", style: null, onsubmit: function (ev) {
          ev.preventDefault();
          if (!from.value || !to.value || from.value > to.value) { from.setCustomValidity(tx.t("rangeInvalid")); from.reportValidity(); return; }
          from.setCustomValidity("");
          self._softly(function () {
            self.setAttribute("start", from.value);
            self.setAttribute("end", to.value);
          });
        } },
          h("label", null, tx.t("rangeFrom"), from), h("label", null, tx.t("rangeTo"), to),
          h("button", { type: "submit", "data-focus": "apply" }, tx.t("rangeApply")));
        form.style.margin = "0";
        bar.appendChild(form);
      }
      var gsel = h("select", { "data-focus": "granularity", onchange: function () {
        var v = this.value;
        self._softly(function () { setOrRemove(self, "granularity", v); });
      } });
      [["", "granularityAuto"], ["hour", "granularityHour"], ["day", "granularityDay"],
       ["week", "granularityWeek"], ["month", "granularityMonth"]].forEach(function (g) {
        gsel.appendChild(h("option", { value: g[0], selected: (o.gran || "").toLowerCase() === g[0] || null }, tx.t(g[1])));
      });
      bar.appendChild(h("label", null, tx.t("granularityLabel"), gsel));
      var keys = ["featureId"].concat(o.keys.filter(function (k) { return k !== "featureId"; }));
      if (keys.indexOf(o.groupBy) < 0) keys.push(o.groupBy);
      var ksel = h("select", { "data-focus": "groupBy", onchange: function () {
        var v = this.value;
        self._softly(function () { self.setAttribute("group-by", v); });
      } });
      keys.forEach(function (k) {
        ksel.appendChild(h("option", { value: k, selected: k === o.groupBy || null }, self._groupByName(k, tx)));
      });
      bar.appendChild(h("label", null, tx.t("groupByLabel"), ksel));
      if (o.currencies.length > 1) {
        var csel = h("select", { "data-focus": "currency", onchange: function () {
          self._pickedCurrency = this.value;
          self._softly(function () { self.reload(); });
        } });
        o.currencies.forEach(function (c) {
          csel.appendChild(h("option", { value: c.currencyId, selected: c.currencyId === o.currencyId || null }, currencyLabel(c)));
        });
        bar.appendChild(h("label", null, tx.t("currencyLabel"), csel));
      }
      bar.appendChild(h("button", { type: "button", "data-focus": "csv", "data-action": "export-csv",
                                    disabled: this.series.length === 0 || null,
                                    onclick: function () { self.exportCsv(); } }, tx.t("exportCsv")));
      return bar;
    }

    // The series as CSV, one row per series and period, numbers exactly as the API gave them:
    // timestamp, featureId, featureName, one column per dimension key (tag.<key>), value,
    // eventCount.
    toCSV() {
      var tagKeys = [];
      this.series.forEach(function (s) { (s.tags || []).forEach(function (t) { if (tagKeys.indexOf(t.key) < 0) tagKeys.push(t.key); }); });
      var lines = [["timestamp", "featureId", "featureName"].concat(tagKeys.map(function (k) { return "tag." + k; }), ["value", "eventCount"])
        .map(csvCell).join(",")];
      this.series.forEach(function (s) {
        var tags = {};
        (s.tags || []).forEach(function (t) { tags[t.key] = t.value; });
        s.points.forEach(function (p) {
          lines.push([p.timestamp, s.featureId, s.featureName].concat(tagKeys.map(function (k) { return tags[k]; }), [p.value, p.eventCount])
            .map(csvCell).join(","));
        });
      });
      return lines.join("\r\n") + "\r\n";
    }

    exportCsv() {
      var q = this._query || {};
      var name = "creditd-usage-" + (this._ctx ? this._ctx.customerId : "") + "-" +
        String(q.startDate || "").slice(0, 10) + "-" + String(q.endDate || "").slice(0, 10) + ".csv";
      var blob = new Blob([this.toCSV()], { type: "text/csv;charset=utf-8" });
      var url = URL.createObjectURL(blob);
      var a = h("a", { href: url, download: name.replace(/[^\w.-]+/g, "_") });
      this.shadowRoot.appendChild(a);
      a.click();
      a.remove();
      setTimeout(function () { URL.revokeObjectURL(url); }, 10000);
      return name;
    }
  }

  // Does a first page of usage (asked for before the credit type was known) hold the
  // answer for `currencyId`? Yes when asked for it; when asked for none, yes if nothing was
  // used, or if everything used was in that credit type (the server names it then), or
  // the range was refused (for any credit type alike).
  function answersFor(got, currencyId) {
    if ((got.q.currencyId || null) === (currencyId || null)) return true;
    if (got.q.currencyId) return false;
    if (got.err) return got.err.status === 400 && got.err.field !== "currencyId";
    var d = got.r.data || {};
    var none = !(d.series && d.series.length) && !(d.pagination && d.pagination.next);
    return none || !!(d.currency && d.currency.currencyId === currencyId);
  }

  function cap(s) { s = String(s || "").toLowerCase(); return s.charAt(0).toUpperCase() + s.slice(1); }
  function seriesKey(s) {
    return (s.featureId || "") + "|" + (s.tags || []).map(function (t) { return t.key + "=" + t.value; }).join("&");
  }
  // The server's automatic buckets, read off the points (or from the span, as it decides).
  function inferGranularity(stamps, w) {
    if (stamps.length >= 2) {
      var step = Date.parse(stamps[1]) - Date.parse(stamps[0]);
      if (step <= HOUR) return "HOUR";
      if (step <= DAY) return "DAY";
      if (step <= 7 * DAY) return "WEEK";
      return "MONTH";
    }
    var span = w.end - w.start;
    return span <= 2 * DAY ? "HOUR" : span <= 62 * DAY ? "DAY" : "MONTH";
  }

  /* ======================================================================================
   * Tables (grants, ledger): a caption, headers, rows, a pager.
   * ====================================================================================== */
  function pager(tx, o) {
    return h("nav", { "class": "pager", part: "pager", "aria-label": o.label },
      o.info ? h("span", { "class": "muted small", "aria-live": "polite" }, o.info) : null,
      h("button", { type: "button", "data-focus": "prev", "data-action": "prev", disabled: !o.hasPrev || null, onclick: o.prev }, tx.t("pagePrev")),
      h("button", { type: "button", "data-focus": "next", "data-action": "next", disabled: !o.hasNext || null, onclick: o.next }, tx.t("pageNext")));
  }

  /* ======================================================================================
   * <creditd-grants>: every grant (type, status, remaining / original, effective, expiry,
   * reason), sortable by any column, paged. DEPLETED is shown for an ACTIVE grant with
   * nothing left (the API's status stays ACTIVE; the engine fires credits.grant.depleted).
   *   attributes: page-size (default 10), sort (column key), order (asc|desc), no-live
   *   column keys: type, status, remaining, effective, expiry, reason (and currency when
   *     no currency-id is set)
   *   properties: grants (as the API gave them, all pages), page
   *   rows: <tr data-grant-id data-status (shown status)>
   *   parts: root, title, table, pager
   * ====================================================================================== */
  var STATUS_ORDER = { ACTIVE: 0, PAYMENT_PENDING: 1, SCHEDULED: 2, DEPLETED: 3, EXPIRED: 4, VOIDED: 5 };

  function shownStatus(g) {
    if (g.status === "ACTIVE" && g.grantType !== "OVERDRAFT" && Dec.cmp(g.consumedAmount, g.amount) >= 0) return "DEPLETED";
    return g.status;
  }
  // What is left: nothing once expired or voided (the remainder left the balance).
  function remainingOf(g) {
    if (g.status === "EXPIRED" || g.status === "VOIDED") return "0";
    return Dec.max(Dec.sub(g.amount, g.consumedAmount), "0");
  }

  class CreditdGrants extends CreditdElement {
    static get extraAttributes() { return ["page-size", "sort", "order", "no-live"]; }
    static get titleKey() { return "grantsTitle"; }

    constructor() { super(); this.grants = []; this.page = 0; }

    async load(ctx, tx, stale) {
      var results = await Promise.all([
        loadGrants(ctx),
        currenciesFor(ctx.client, ctx.key)
      ]);
      if (stale()) return;
      this.grants = results[0].items;
      this._truncated = results[0].truncated;
      this._names = results[1];
      this._draw(tx);
      var self = this;
      if (!this.hasAttribute("no-live")) {
        this._listen(ctx, function (frame) {
          if (frame.type === "balance" || (frame.type && frame.type.indexOf("credits.") === 0)) self._refreshSoon(1500);
        });
      }
    }

    _columns(tx) {
      var cols = [
        { key: "type", label: tx.t("colType"), value: function (g) { return tx.t("grantType_" + g.grantType); } },
        { key: "status", label: tx.t("colStatus"), sortValue: function (g) { var s = shownStatus(g); return s in STATUS_ORDER ? STATUS_ORDER[s] : 9; } },
        { key: "remaining", label: tx.t("colRemaining"), num: true },
        { key: "effective", label: tx.t("colEffective"), sortValue: function (g) { return g.effectiveAt ? Date.parse(g.effectiveAt) : 0; } },
        { key: "expiry", label: tx.t("colExpiry"), sortValue: function (g) { return g.expireAt ? Date.parse(g.expireAt) : Infinity; } },
        { key: "reason", label: tx.t("colReason"), sortValue: function (g) { return (g.displayName || "").toLocaleLowerCase(); } }
      ];
      var several = new Set(this.grants.map(function (g) { return g.currencyId; })).size > 1;
      if (!this._ctx.currencyId && several) {
        var names = this._names;
        cols.splice(2, 0, { key: "currency", label: tx.t("colCurrency"), value: function (g) { return currencyLabel(names.get(g.currencyId) || { currencyId: g.currencyId }); } });
      }
      return cols;
    }

    _sorted(cols) {
      var key = this.getAttribute("sort"), desc = (this.getAttribute("order") || "asc") === "desc";
      var col = cols.find(function (c) { return c.key === key; });
      var rows = this.grants.slice();
      if (!col) return rows; // the API's order: creation
      var value = col.key === "remaining" ? null : (col.sortValue || col.value);
      rows.sort(function (a, b) {
        var r;
        if (col.key === "remaining") r = Dec.cmp(remainingOf(a), remainingOf(b));
        else {
          var x = value(a), y = value(b);
          r = typeof x === "string" ? x.localeCompare(y) : x < y ? -1 : x > y ? 1 : 0;
        }
        return desc ? -r : r;
      });
      return rows;
    }

    _draw(tx) {
      var self = this, ctx = this._ctx, names = this._names;
      var cols = this._columns(tx);
      var size = Math.max(1, Math.min(100, parseInt(this.getAttribute("page-size"), 10) || 10));
      var rows = this._sorted(cols);
      var pages = Math.max(1, Math.ceil(rows.length / size));
      this.page = Math.min(this.page, pages - 1);
      var shown = rows.slice(this.page * size, this.page * size + size);
      var sortKey = this.getAttribute("sort"), order = this.getAttribute("order") || "asc";
      var head = h("tr", null, cols.map(function (c) {
        var sorted = sortKey === c.key;
        return h("th", { scope: "col", "class": c.num ? "num" : null,
                         "aria-sort": sorted ? (order === "desc" ? "descending" : "ascending") : "none" },
          // Named by the column alone (the header a screen reader repeats in every cell);
          // "Sort by …" is its description, the order is the header's aria-sort.
          h("button", { type: "button", "data-focus": "sort:" + c.key, "data-sort": c.key,
                        title: tx.t("sortBy", { column: c.label }),
                        onclick: function () {
                          var next = sorted && order === "asc" ? "desc" : "asc";
                          self.page = 0;
                          // Both attributes, then one redraw (no refetch: the data is here).
                          self._quietAttr = true;
                          self.setAttribute("sort", c.key);
                          self.setAttribute("order", next);
                          self._quietAttr = false;
                          self._draw(self._textsApi());
                        } }, c.label));
      }));
      var body = h("tbody", null, shown.map(function (g) {
        var c = names.get(g.currencyId) || { currencyId: g.currencyId };
        var st = shownStatus(g);
        return h("tr", { "data-grant-id": g.id, "data-status": st }, cols.map(function (col) {
          switch (col.key) {
            case "status": return h("td", null, h("span", { "class": "status", "data-status": st }, tx.t("grantStatus_" + st)));
            case "remaining":
              return h("td", { "class": "num" }, tx.t("grantRemaining", { remaining: "\u0001", original: "\u0002" }).split(/([\u0001\u0002])/).map(function (s) {
                return s === "\u0001" ? amountNode(remainingOf(g), c, tx, { noUnit: true }) : s === "\u0002" ? amountNode(g.amount, c, tx) : s;
              }));
            // The day in the cell, the time in the tooltip: the table stays narrow.
            case "effective": return h("td", { "class": "date" }, g.effectiveAt ? h("time", { datetime: g.effectiveAt, title: formatDate(g.effectiveAt, tx.locale) },
                                                                    formatDate(g.effectiveAt, tx.locale, "date")) : tx.t("none"));
            case "expiry": return h("td", { "class": "date" }, g.expireAt ? h("time", { datetime: g.expireAt, title: formatDate(g.expireAt, tx.locale) },
                                                               formatDate(g.expireAt, tx.locale, "date")) : tx.t("never"));
            // The comment is the operator's internal note: a tooltip for an API key (the
            // console) only, never shown to a customer's token.
            case "reason": return h("td", { title: ctx.token ? null : g.comment || null }, g.displayName || tx.t("none"));
            default: return h("td", null, col.value(g));
          }
        }));
      }));
      var table = h("div", { "class": "table-wrap" },
        h("table", { part: "table" }, h("caption", null, tx.t("grantsCaption")), h("thead", null, head), body));
      var from = rows.length ? this.page * size + 1 : 0, to = this.page * size + shown.length;
      var content = [table];
      if (this._truncated) content.push(h("p", { "class": "muted small" }, tx.t("grantsTruncated", { count: rows.length })));
      if (rows.length > size) {
        content.push(pager(tx, {
          label: tx.t("grantsTitle"),
          info: tx.t("pageRange", { from: from, to: to, total: rows.length }),
          hasPrev: this.page > 0, hasNext: this.page < pages - 1,
          prev: function () { self.page--; self._draw(self._textsApi()); },
          next: function () { self.page++; self._draw(self._textsApi()); }
        }));
      }
      this._render([this._heading(tx), this._emptyOr(tx, rows.length === 0, "grantsEmpty", content)]);
    }

    attributeChangedCallback(name, oldValue, newValue) {
      if (this._quietAttr) return;
      if ((name === "sort" || name === "order" || name === "page-size") && this._names && this.dataset.state !== "loading" && this.dataset.state !== "error") {
        if (oldValue !== newValue) this._draw(this._textsApi());
        return;
      }
      super.attributeChangedCallback(name, oldValue, newValue);
    }
  }

  /* ======================================================================================
   * <creditd-ledger>: entries newest first (time, type, grant, feature, signed change),
   * filtered by type and by date range, paged: all three by the server
   * (GET /api/v1/credits/ledger with eventType=A,B, startDate (inclusive) and endDate
   * (exclusive)). The from / to days are the viewer's local days: from's local midnight
   * and the local midnight after to, as instants. "Next" follows the answer's
   * pagination.next (after=), "Previous" its pagination.prev (before=); back on the first
   * page the newest rows are read again (so live changes show there).
   *   attributes: page-size (default 20, ≤100), from / to (YYYY-MM-DD, the viewer's days,
   *     both included; or full ISO instants, to then exclusive), types (comma-separated
   *     ledger types), no-live
   *   properties: entries (the rows shown, as the API gave them), page (0-based: how many
   *     times "Next" was followed from the newest rows)
   *   rows: <tr data-event-id data-type>
   *   parts: root, title, filters, table, pager
   * ====================================================================================== */
  var LEDGER_TYPES = ["CREDITS_GRANTED", "CREDITS_CONSUMED", "CREDITS_EXPIRED", "CREDITS_VOIDED", "CREDITS_UPDATED",
                      "CREDITS_CONSUMPTION_TRANSFER_SOURCE", "CREDITS_CONSUMPTION_TRANSFER_TARGET",
                      "CREDITS_RESERVED", "CREDITS_RESERVATION_RELEASED", "CREDITS_RESERVATION_EXPIRED"];

  // A local calendar day "YYYY-MM-DD" as epoch ms at its start (the viewer's time zone);
  // another ISO time as given; null when neither.
  function localDay(s, plusDays) {
    var m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(s || "");
    if (!m) { var t = Date.parse(s || ""); return isNaN(t) ? null : t; }
    return new Date(+m[1], +m[2] - 1, +m[3] + (plusDays || 0)).getTime();
  }

  class CreditdLedger extends CreditdElement {
    static get extraAttributes() { return ["page-size", "from", "to", "types", "no-live"]; }
    static get titleKey() { return "ledgerTitle"; }

    constructor() { super(); this.entries = []; this.page = 0; this._cursor = null; this._pageKey = null; }

    attributeChangedCallback(name, oldValue, newValue) {
      if (oldValue !== newValue && name !== "heading-level" && name !== "locale") { // a new filter
        this.page = 0; this._cursor = null;
      }
      super.attributeChangedCallback(name, oldValue, newValue);
    }

    // "Next" / "Previous": the server's cursor; the first page is always the newest rows.
    _goTo(page, cursor) {
      var self = this;
      this._cursor = page > 0 ? cursor : null;
      this.page = this._cursor ? page : 0;
      this._softly(function () { self.reload(); });
    }

    async load(ctx, tx, stale) {
      var self = this;
      var size = Math.max(1, Math.min(100, parseInt(this.getAttribute("page-size"), 10) || 20));
      var from = this.getAttribute("from"), to = this.getAttribute("to");
      var start = from ? localDay(from) : null;
      var end = to ? localDay(to, /^\d{4}-\d{2}-\d{2}$/.test(to) ? 1 : 0) : null; // the "to" day is included
      var types = (this.getAttribute("types") || "").split(",").map(function (s) { return s.trim(); }).filter(Boolean);
      // Another customer, credential or filter: back to the newest rows.
      var pageKey = [ctx.key, ctx.currencyId, start, end, types.join(","), size].join("|");
      if (pageKey !== this._pageKey) { this.page = 0; this._cursor = null; this._pageKey = pageKey; }
      var query = {
        customerId: ctx.customerId, currencyId: ctx.currencyId, resourceId: ctx.resourceId,
        eventType: types.join(",") || null, limit: size,
        startDate: start != null ? new Date(start).toISOString() : null,
        endDate: end != null ? new Date(end).toISOString() : null
      };
      if (this._cursor) query[this._cursor.dir] = this._cursor.at;
      var both;
      try {
        if (start != null && end != null && start >= end) {
          var invalid = CreditdError(400, "BadUserInput", tx.t("rangeInvalid"), "startDate");
          invalid.ownText = true;
          throw invalid;
        }
        both = await Promise.all([
          currenciesFor(ctx.client, ctx.key),
          ctx.client.get("/api/v1/credits/ledger", query, { signal: ctx.signal })
        ]);
      } catch (err) {
        if (err.status !== 400 || stale()) throw err;
        // Dates or types the server refuses: say why next to the filters, to be changed.
        this.entries = [];
        this._setState("error");
        this._render([this._heading(tx), this._filters(tx, types),
          h("div", { "class": "error", role: "alert", part: "error", "data-code": err.code || null },
            err.ownText ? err.message
              : tx.t("errorGeneric", { message: err.message + (err.field ? " (" + err.field + ")" : "") }))]);
        return;
      }
      if (stale()) return;
      var names = both[0], r = both[1], pg = r.pagination || {};
      this.entries = r.data || [];
      if (this.page > 0 && this._cursor && this._cursor.dir === "before" && !pg.prev) {
        // Back at the newest rows (fewer pages before than counted: none are added at the
        // end of a time-ordered list, so this is the first page).
        this.page = 0; this._cursor = null;
      }
      this._next = pg.next || null;
      this._prev = pg.prev || null;
      this._hasNext = !!this._next;
      this._draw(ctx, tx, names, { size: size, types: types });
      if (!this.hasAttribute("no-live")) {
        this._listen(ctx, function (frame) {
          // New rows appear on the first page only; later pages keep still while reading.
          if (self.page === 0 && (frame.type === "balance" || (frame.type && frame.type.indexOf("credits.") === 0))) {
            self._refreshSoon(1500);
          }
        });
      }
    }

    _draw(ctx, tx, names, o) {
      var self = this;
      var filters = this._filters(tx, o.types);
      var body = h("tbody", null, this.entries.map(function (e) {
        var c = names.get(e.creditCurrencyId) || { currencyId: e.creditCurrencyId };
        return h("tr", { "data-event-id": e.eventId, "data-type": e.eventType },
          h("td", null, h("time", { datetime: e.timestamp }, formatDate(e.timestamp, tx.locale))),
          h("td", null, tx.t("ledgerType_" + e.eventType)),
          h("td", null, e.creditGrantId ? h("code", null, e.creditGrantId) : tx.t("none")),
          h("td", null, e.featureId || tx.t("none")),
          h("td", { "class": "num" + (Dec.sign(e.amount) < 0 ? " neg" : "") }, amountNode(e.amount, c, tx, { signed: true })));
      }));
      var table = h("div", { "class": "table-wrap" }, h("table", { part: "table" },
        h("caption", null, tx.t("ledgerCaption")),
        h("thead", null, h("tr", null, ["colTime", "colEntryType", "colGrant", "colFeature", "colChange"].map(function (k) {
          return h("th", { scope: "col", "class": k === "colChange" ? "num" : null }, tx.t(k));
        }))), body));
      var content = [table];
      if (this.page > 0 || this._hasNext) {
        content.push(pager(tx, {
          label: tx.t("ledgerTitle"), info: tx.t("pageNumber", { page: this.page + 1 }),
          hasPrev: this.page > 0, hasNext: this._hasNext,
          prev: function () { self._goTo(self.page - 1, self._prev ? { dir: "before", at: self._prev } : null); },
          next: function () { self._goTo(self.page + 1, { dir: "after", at: self._next }); }
        }));
      }
      var empty = this.entries.length === 0 && this.page === 0;
      this._render([this._heading(tx), filters, this._emptyOr(tx, empty, "ledgerEmpty", content)]);
    }

    _filters(tx, types) {
      var self = this;
      var from = h("input", { type: "date", name: "from", value: this.getAttribute("from") || "", "data-focus": "from" });
      var to = h("input", { type: "date", name: "to", value: this.getAttribute("to") || "", "data-focus": "to" });
      var boxes = h("fieldset", null, h("legend", { "class": "muted" }, tx.t("filterTypes")),
        LEDGER_TYPES.map(function (t) {
          return h("label", null, h("input", { type: "checkbox", name: "type", value: t, checked: types.indexOf(t) >= 0 || null,
                                               "data-focus": "type:" + t }), tx.t("ledgerType_" + t));
        }));
      return h("form", { "class": "toolbar", part: "filters", onsubmit: function (ev) {
        ev.preventDefault();
        var chosen = Array.prototype.filter.call(this.querySelectorAll("input[name=type]"), function (i) { return i.checked; })
          .map(function (i) { return i.value; });
        self._softly(function () {
          setOrRemove(self, "from", from.value);
          setOrRemove(self, "to", to.value);
          setOrRemove(self, "types", chosen.join(","));
        });
      }, onreset: function (ev) {
        ev.preventDefault();
        self._softly(function () {
          ["from", "to", "types"].forEach(function (a) { self.removeAttribute(a); });
        });
      } },
        h("label", null, tx.t("filterFrom"), from), h("label", null, tx.t("filterTo"), to), boxes,
        h("button", { type: "submit", "class": "primary", "data-focus": "apply" }, tx.t("filterApply")),
        h("button", { type: "reset", "data-focus": "reset" }, tx.t("filterReset")));
    }
  }

  function setOrRemove(el, name, value) {
    if (value) el.setAttribute(name, value); else el.removeAttribute(name);
  }

  /* ======================================================================================
   * <creditd-auto-recharge>: per credit type, whether auto-recharge is on, its rule (below X,
   * top up to Y), this month's spend against the cap, a top-up being paid, the last failure.
   *   attributes: no-live
   *   properties: settings (the API's answers, one per credit type)
   *   card: data-currency-id, data-enabled
   *   parts: root, title, card, amount, bar
   * ====================================================================================== */
  class CreditdAutoRecharge extends CreditdElement {
    static get extraAttributes() { return ["no-live"]; }
    static get titleKey() { return "autoRechargeTitle"; }

    async load(ctx, tx, stale) {
      var self = this, currencies, answers;
      function settings(currencyId) {
        return ctx.client.get("/api/v1/credits/auto-recharge", { customerId: ctx.customerId, currencyId: currencyId,
                                                                resourceId: ctx.resourceId }, { signal: ctx.signal })
          .then(function (r) { return r.data; });
      }
      if (ctx.currencyId) {
        // The settings and the credit type's names together.
        var both = await Promise.all([currenciesFor(ctx.client, ctx.key), settings(ctx.currencyId)]);
        currencies = [both[0].get(ctx.currencyId) || { currencyId: ctx.currencyId }];
        answers = [both[1]];
      } else {
        // The settings are per credit type: which ones the customer has comes first (the
        // balance card's read of the pools, shared).
        currencies = currenciesOfPools(await loadPools(ctx));
        if (stale()) return;
        answers = await Promise.all(currencies.map(function (c) { return settings(c.currencyId); }));
      }
      if (stale()) return;
      this.settings = answers;
      var cards = h("div", { "class": "cards" });
      answers.forEach(function (s, i) { cards.appendChild(self._card(s, currencies[i], tx)); });
      this._render([this._heading(tx), this._emptyOr(tx, answers.length === 0, "autoRechargeEmpty", cards)]);
      if (!this.hasAttribute("no-live")) {
        this._listen(ctx, function (frame) {
          if (frame.type && (frame.type.indexOf("credits.auto_recharge.") === 0 || frame.type === "credits.granted")) self._refreshSoon(1000);
        });
      }
    }

    _card(s, c, tx) {
      var on = !!s.isEnabled && s.isEnabled !== "false";
      var label = currencyLabel(c);
      var money = s.topUpPrice && s.topUpPrice.currency;
      var statusText = tx.t(on ? "autoRechargeOn" : "autoRechargeOff");
      var card = h("section", { "class": "card", part: "card", "data-currency-id": s.currencyId,
                                "data-enabled": String(on), "aria-label": tx.t("autoRechargeStatus", { currency: label, status: statusText }) },
        h("div", { "class": "card-title" }, label, " ", h("span", { "class": "onoff", "data-on": on || null }, statusText)));
      if (!s.id) { card.appendChild(h("div", { "class": "muted" }, tx.t("autoRechargeNotSet"))); return card; }
      var threshold = s.thresholdType === "DOLLAR_AMOUNT"
        ? h("data", { "class": "amount", value: Dec.plain(s.thresholdValue), part: "amount" }, formatMoney(s.thresholdValue, money, tx.locale))
        : amountNode(s.thresholdValue, c, tx);
      card.appendChild(h("div", null, splitFill(tx.t("autoRechargeRule", { threshold: "\u0001", target: "\u0002" }),
                                                 [threshold, amountNode(s.targetBalance, c, tx)])));
      var spend = h("data", { "class": "amount", value: Dec.plain(s.currentMonthlySpend), part: "amount" },
                    formatMoney(s.currentMonthlySpend, money, tx.locale));
      if (s.maxSpendLimit != null) {
        var capNode = h("data", { "class": "amount", value: Dec.plain(s.maxSpendLimit), part: "amount" },
                        formatMoney(s.maxSpendLimit, money, tx.locale));
        card.appendChild(h("div", null, splitFill(tx.t("autoRechargeSpend", { spend: "\u0001", cap: "\u0002" }), [spend, capNode])));
        var ratio = Dec.ratio(s.currentMonthlySpend, s.maxSpendLimit), pct = formatPercent(ratio, tx.locale);
        var bar = h("div", { "class": "bar", part: "bar", role: "progressbar", "aria-valuemin": 0, "aria-valuemax": 100,
                             "aria-valuenow": Math.round(ratio * 1000) / 10,
                             "aria-label": tx.t("autoRechargeSpendBar", { percent: pct }), "data-full": ratio >= 1 || null },
                    h("span"));
        bar.firstChild.style.width = (ratio * 100).toFixed(2) + "%";
        card.appendChild(bar);
      } else {
        card.appendChild(h("div", null, splitFill(tx.t("autoRechargeSpendNoCap", { spend: "\u0001" }), [spend])));
      }
      if (s.grantExpirationPeriod) card.appendChild(h("div", { "class": "muted small" }, tx.t("autoRechargeExpiry_" + s.grantExpirationPeriod)));
      if (s.inFlight) {
        card.appendChild(h("div", { "class": "warn", role: "status" },
          tx.t("autoRechargeInFlight", { cost: formatMoney(s.inFlight.cost, money, tx.locale) })));
      }
      if (s.lastFailure) {
        card.appendChild(h("div", { "class": "danger", role: "status" },
          tx.t("autoRechargeFailure", { reason: typeof s.lastFailure === "string" ? s.lastFailure : JSON.stringify(s.lastFailure) })));
      }
      return card;
    }
  }

  // A text with \u0001, \u0002… placeholders, filled with nodes (amounts keep their <data>).
  function splitFill(text, nodes) {
    return String(text).split(/([\u0001-\u0009])/).map(function (s) {
      var code = s.length === 1 ? s.charCodeAt(0) : 0;
      return code >= 1 && code <= 9 ? nodes[code - 1] : s;
    });
  }

  /* ======================================================================================
   * Registration and the global API.
   * ====================================================================================== */
  var ELEMENTS = {
    "creditd-balance": CreditdBalance,
    "creditd-utilization": CreditdUtilization,
    "creditd-usage-chart": CreditdUsageChart,
    "creditd-grants": CreditdGrants,
    "creditd-ledger": CreditdLedger,
    "creditd-auto-recharge": CreditdAutoRecharge
  };

  window.Creditd = {
    __loaded: true,
    version: VERSION,
    configure: configure,
    get config() { return Object.assign({}, config, { apiKey: config.apiKey ? "(set)" : null }); },
    // A client with the given (or configured) server and credentials: get/post/request/all.
    api: function (options) {
      var o = Object.assign({}, config, options || {});
      if (o.token) o.apiKey = null;
      return createClient(o);
    },
    texts: Object.freeze(Object.assign({}, TEXTS)),
    parseJSON: exactNumbers,
    decimal: Dec,
    format: {
      amount: function (value, locale, opts) { return formatAmount(value, locale || config.locale || navigator.language, opts); },
      money: function (value, currency, locale) { return formatMoney(value, currency, locale || config.locale || navigator.language); },
      date: function (iso, locale, style) { return formatDate(iso, locale || config.locale || navigator.language, style); }
    },
    elements: ELEMENTS,
    loadChartJs: loadChartJs
  };

  Object.keys(ELEMENTS).forEach(function (name) {
    if (!customElements.get(name)) customElements.define(name, ELEMENTS[name]);
  });
})();
