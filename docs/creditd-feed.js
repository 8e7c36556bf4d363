// creditd live balance feed: a small browser client (docs/feed.md).
//
// subscribeCredits({url, getToken, onSnapshot, onBalance, onEvent, onError}) opens the feed
// with a customer token, remembers the last sequence number it saw and reconnects with
// `since=` after any close, so nothing committed is missed. It returns a function that stops
// the subscription.

const RETRY_NOW = new Set([1000, 1001, 1006, 1011, 1012, 4408, 4409]);
const GIVE_UP = new Set([4400, 4403, 4404]);

export function subscribeCredits({ url, getToken, onSnapshot, onBalance, onEvent,
                                   onError = console.warn, heartbeatSeconds = 15 }) {
  let lastSeq = null;     // the highest seq seen: where a reconnect resumes
  let socket = null;
  let stopped = false;
  let delay = 500;        // backoff for refusals that may clear up (1013, 4429, network)
  let watchdog = null;

  function armWatchdog() {
    // The server sends at least a heartbeat every heartbeatSeconds; silence for two
    // periods means the link is dead even if the browser has not noticed.
    clearTimeout(watchdog);
    watchdog = setTimeout(() => socket && socket.close(4000, "no heartbeat"),
                          2 * heartbeatSeconds * 1000);
  }

  async function connect() {
    if (stopped) return;
    let token;
    try {
      token = await getToken();
    } catch (err) {
      onError(err);
      return retry(false);
    }
    const query = new URLSearchParams({ token });
    if (lastSeq !== null) query.set("since", String(lastSeq));
    socket = new WebSocket(`${url}?${query}`);
    socket.onopen = armWatchdog;
    socket.onmessage = (message) => {
      armWatchdog();
      const frame = JSON.parse(message.data);
      if (frame.type === "error") return onError(frame);
      if (frame.type === "heartbeat" || frame.type === "pong") return;
      if (frame.type === "snapshot") {
        lastSeq = frame.seq;
        delay = 500;
        return onSnapshot(frame);  // frame.reset: refetch what you built from events
      }
      if (frame.type === "balance") {
        lastSeq = Math.max(lastSeq ?? 0, frame.seq);
        return onBalance(frame);
      }
      lastSeq = frame.seq;         // an event: seq is gapless per customer
      onEvent(frame);
    };
    socket.onclose = (close) => {
      clearTimeout(watchdog);
      if (stopped || GIVE_UP.has(close.code)) return;
      retry(RETRY_NOW.has(close.code));
    };
  }

  function retry(now) {
    const wait = now ? 0 : delay;
    delay = Math.min(delay * 2, 30000);
    setTimeout(connect, wait + Math.random() * 250);
  }

  connect();
  return () => {
    stopped = true;
    clearTimeout(watchdog);
    if (socket) socket.close(1000, "done");
  };
}
