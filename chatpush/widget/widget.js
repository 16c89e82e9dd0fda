// chatpush chat widget: one ES module, no build step (docs/widget.md).
//
// It speaks the public Chat API v2: over CometD with the official client (vendor/cometd/), or by
// polling `refresh` over REST. What it keeps in sessionStorage (so a reload resumes the chat):
// chatId, secureKey, userId, alias, the transcript position it has shown, and the transport.
import { CometD } from "./vendor/cometd/Client.js";

const root = document.querySelector("[data-chatpush-widget]");
const $ = (id) => document.getElementById(id);
const query = new URLSearchParams(location.search);
const option = (name, fallback) => query.get(name) || root.dataset[name] || fallback;

// Where chatpush is: the page's attribute only, never its address bar, so that a link cannot
// point a company's page at someone else's server.
const serviceUrl = (root.dataset.serviceUrl || location.origin).replace(/\/+$/, "");
const service = option("service", "customer-support");
const transportChoice = option("transport", "auto"); // auto | cometd | rest
const pollMs = Math.max(250, Number(option("pollMs", "1000")) || 1000);
const STORE_KEY = `chatpush-widget ${serviceUrl} ${service}`;
const TYPING_IDLE_MS = 3000;
const GONE = [102, 103]; // error codes: wrong secureKey, unknown chat

let chat = null; // {chatId, secureKey, userId, alias, position, transport}
let link = null; // the transport in use: CometdLink or RestLink
const typing = new Map(); // participantId -> nickname, for the others who are typing
let myTypingTimer = null;
let starting = false; // a chat request is on its way: a second Enter does not start another

// -- state kept across reloads ----------------------------------------------------------------

function save() {
  // An ended chat is not resumed: a late envelope of it does not bring its entry back.
  if (chat && !chat.ended) sessionStorage.setItem(STORE_KEY, JSON.stringify(chat));
}

function forget() {
  sessionStorage.removeItem(STORE_KEY);
}

function restore() {
  try {
    const saved = JSON.parse(sessionStorage.getItem(STORE_KEY) || "null");
    if (saved && typeof saved.chatId === "string" && typeof saved.secureKey === "string") {
      return saved;
    }
  } catch {
    // a damaged entry: start over
  }
  forget();
  return null;
}

// -- the page -----------------------------------------------------------------------------------

function status(text) {
  $("cp-status").textContent = text || "";
}

function showStart() {
  $("cp-start").hidden = false;
  $("cp-chat").hidden = true;
  $("cp-nickname").focus();
}

function showChat() {
  $("cp-start").hidden = true;
  $("cp-chat").hidden = false;
  $("cp-ended").hidden = true;
  $("cp-send").hidden = false;
}

function showEnded() {
  $("cp-send").hidden = true;
  $("cp-ended").hidden = false;
  typing.clear();
  showTyping();
  $("cp-new").focus();
}

function showTyping() {
  const names = [...typing.values()];
  $("cp-typing").textContent = names.length
    ? `${names.join(", ")} ${names.length > 1 ? "are" : "is"} typing…`
    : "";
}

function time(ms) {
  const when = new Date(ms);
  const element = document.createElement("time");
  element.dateTime = when.toISOString();
  element.textContent = when.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  return element;
}

const NOTICES = {
  ParticipantJoined: (who) => `${who} joined the chat`,
  ParticipantLeft: (who) => `${who} left the chat`,
  NicknameUpdated: (who, text) => `${who} is now called ${text || who}`,
};

function render(event) {
  const from = event.from || {};
  const who = from.nickname || from.type || "Someone";
  const mine = from.type === "Client";
  if (event.type === "TypingStarted" || event.type === "TypingStopped") {
    if (!mine && event.type === "TypingStarted") typing.set(from.participantId, who);
    else typing.delete(from.participantId);
    showTyping();
    return;
  }
  if (event.type === "PushUrl") return;
  const item = document.createElement("li");
  item.dataset.index = event.index;
  item.dataset.type = event.type;
  if (event.type === "Message") {
    typing.delete(from.participantId);
    showTyping();
    item.className = `cp-event ${mine ? "cp-from-me" : "cp-from-them"}`;
    const name = document.createElement("span");
    name.className = "cp-who";
    name.textContent = mine ? "You" : who;
    const text = document.createElement("span");
    text.className = "cp-text";
    text.textContent = event.text || ""; // never HTML: a message is text
    item.append(name, text);
  } else {
    item.className = "cp-event cp-notice";
    const notice = NOTICES[event.type];
    item.textContent = notice ? notice(who, event.text) : event.text || event.type;
    if (event.type === "ParticipantLeft") {
      typing.delete(from.participantId);
      showTyping();
    }
  }
  if (event.utcTime) item.append(time(event.utcTime));
  const list = $("cp-transcript");
  list.append(item);
  list.scrollTop = list.scrollHeight;
}

// -- envelopes, from either transport ------------------------------------------------------------

function receive(envelope) {
  if (!envelope || typeof envelope !== "object") return;
  if (envelope.statusCode !== 0) {
    const errors = envelope.errors || [];
    const advice = errors.map((e) => e.advice).join("; ");
    if (chat && errors.some((e) => GONE.includes(e.code))) {
      lost(); // purged after its retention, or this is not its key
      return;
    }
    status(advice || "The chat service refused that.");
    if (chat && envelope.chatEnded) ended();
    return;
  }
  status("");
  if (!chat) {
    if (!envelope.chatId || !envelope.secureKey) return;
    chat = { chatId: envelope.chatId, secureKey: envelope.secureKey, position: 1 };
    showChat();
    $("cp-message").focus();
  } else if (envelope.chatId && envelope.chatId !== chat.chatId) {
    return;
  }
  chat.userId = envelope.userId ?? chat.userId;
  chat.alias = envelope.alias ?? chat.alias;
  chat.transport = link ? link.name : chat.transport;
  for (const event of envelope.messages || []) {
    if (typeof event.index !== "number" || event.index < chat.position) continue; // seen
    render(event);
    chat.position = event.index + 1;
  }
  save();
  if (envelope.chatEnded) ended();
}

function ended() {
  if (!chat || chat.ended) return;
  chat.ended = true;
  forget();
  if (link) link.close();
  showEnded();
}

function lost() {
  chat = null;
  forget();
  if (link) link.close();
  link = null;
  $("cp-transcript").replaceChildren();
  status("Your previous chat is no longer available. You can start a new one.");
  showStart();
}

// -- transports -----------------------------------------------------------------------------------

const REST_PATHS = {
  sendMessage: "send",
  startTyping: "startTyping",
  stopTyping: "stopTyping",
  disconnect: "disconnect",
  requestNotifications: "refresh",
};

class RestLink {
  name = "rest";
  #timer = null;
  #closed = false;

  async start() {}

  async call(operation, fields) {
    let url = `${serviceUrl}/genesys/2/chat/${encodeURIComponent(service)}`;
    if (operation !== "requestChat") {
      url += `/${encodeURIComponent(chat.chatId)}/${REST_PATHS[operation]}`;
      fields = { secureKey: chat.secureKey, ...fields };
    }
    // A form body: a "simple" cross-origin request, without a preflight.
    const response = await fetch(url, { method: "POST", body: new URLSearchParams(fields) });
    const envelope = await response.json();
    receive(envelope);
    if (operation === "requestChat" || operation === "requestNotifications") this.#poll();
    return envelope;
  }

  #poll() {
    clearTimeout(this.#timer);
    if (this.#closed) return;
    this.#timer = setTimeout(async () => {
      if (!chat || chat.ended || this.#closed) return;
      try {
        await this.call("requestNotifications", { transcriptPosition: String(chat.position) });
      } catch {
        status("Connection lost; trying again…");
        this.#poll();
      }
    }, pollMs);
  }

  close() {
    this.#closed = true;
    clearTimeout(this.#timer);
  }
}

class CometdLink {
  name = "cometd";
  #cometd = new CometD();
  #channel = `/service/chatV2/${service}`;
  #handshakes = 0;

  start() {
    const cometd = this.#cometd;
    cometd.unregisterTransport("callback-polling"); // JSONP: not served by chatpush
    cometd.configure({
      url: `${serviceUrl}/genesys/cometd`,
      logLevel: "warn",
      useWorkerScheduler: false, // a worker from a blob: URL would need a looser page policy
    });
    cometd.addListener(this.#channel, (message) => receive(message.data));
    return new Promise((resolve, reject) => {
      cometd.addListener("/meta/handshake", (reply) => {
        if (!reply.successful) {
          if (this.#handshakes === 0) {
            cometd.disconnect();
            reject(new Error("CometD handshake failed"));
          }
          return;
        }
        this.#handshakes += 1;
        if (this.#handshakes === 1) resolve();
        // A new session after a lost one (a restarted server): follow the chat again from
        // where the page is.
        else if (chat && !chat.ended) {
          const position = String(chat.position);
          run(() => this.call("requestNotifications", { transcriptPosition: position }));
        }
      });
      cometd.handshake();
    });
  }

  call(operation, fields) {
    const data = { operation, ...fields };
    if (operation !== "requestChat") Object.assign(data, { chatId: chat.chatId, secureKey: chat.secureKey });
    return new Promise((resolve, reject) => {
      this.#cometd.publish(this.#channel, data, (reply) =>
        reply.successful ? resolve() : reject(new Error(reply.error || "not delivered")),
      );
    });
  }

  close() {
    this.#cometd.disconnect();
  }
}

async function connect(preferred) {
  if (preferred !== "rest" && transportChoice !== "rest") {
    const cometd = new CometdLink();
    try {
      await cometd.start();
      return cometd;
    } catch (error) {
      if (transportChoice === "cometd") throw error;
    }
  }
  const rest = new RestLink();
  await rest.start();
  return rest;
}

// -- what the customer does -------------------------------------------------------------------------

async function run(action) {
  try {
    await action();
  } catch (error) {
    status(`Could not reach the chat service (${error.message}).`);
  }
}

$("cp-start").addEventListener("submit", (submit) => {
  submit.preventDefault();
  const form = new FormData($("cp-start"));
  const fields = { nickname: form.get("nickname").trim() };
  for (const name of ["subject", "emailAddress"]) {
    const value = form.get(name).trim();
    if (value) fields[name] = value;
  }
  if (!fields.nickname) {
    status("Please give your name.");
    $("cp-nickname").focus();
    return;
  }
  if (starting) return;
  starting = true;
  status("Starting the chat…");
  $("cp-transcript").replaceChildren();
  run(async () => {
    try {
      link = await connect();
      await link.call("requestChat", fields);
    } finally {
      starting = false;
    }
  });
});

async function stopMyTyping() {
  if (myTypingTimer === null) return;
  clearTimeout(myTypingTimer);
  myTypingTimer = null;
  await link.call("stopTyping", {});
}

$("cp-message").addEventListener("input", () => {
  if (!chat || chat.ended || !link) return;
  if (myTypingTimer === null) run(() => link.call("startTyping", {}));
  clearTimeout(myTypingTimer);
  myTypingTimer = setTimeout(() => run(stopMyTyping), TYPING_IDLE_MS);
});

$("cp-message").addEventListener("keydown", (key) => {
  if (key.key === "Enter" && !key.shiftKey && !key.isComposing) {
    key.preventDefault();
    $("cp-send").requestSubmit();
  }
});

$("cp-send").addEventListener("submit", (submit) => {
  submit.preventDefault();
  const text = $("cp-message").value;
  if (!text.trim() || !chat || !link) return;
  $("cp-message").value = "";
  run(async () => {
    clearTimeout(myTypingTimer);
    myTypingTimer = null; // a message ends typing by itself
    try {
      const fields = { message: text, transcriptPosition: String(chat.position) };
      const refused = await link.call("sendMessage", fields); // REST: the envelope
      if (refused?.statusCode && !$("cp-message").value) $("cp-message").value = text;
    } catch (error) {
      if (!$("cp-message").value) $("cp-message").value = text; // not sent: not lost either
      throw error;
    }
  });
});

$("cp-end").addEventListener("click", () => {
  if (!chat || !link) return;
  run(() => link.call("disconnect", {}));
});

$("cp-new").addEventListener("click", () => {
  chat = null;
  link = null;
  $("cp-transcript").replaceChildren();
  status("");
  showStart();
});

// -- start: a new chat, or the one this tab had before a reload --------------------------------

async function resume(saved) {
  showChat();
  status("Reconnecting…");
  const list = $("cp-transcript");
  list.setAttribute("aria-busy", "true"); // the old transcript is not announced again
  chat = { ...saved, position: 1 }; // the page lost the transcript: read it again from 1
  try {
    link = await connect(saved.transport);
    await link.call("requestNotifications", { transcriptPosition: "1" });
  } finally {
    list.setAttribute("aria-busy", "false");
  }
}

const saved = restore();
if (saved) run(() => resume(saved));
else showStart();
