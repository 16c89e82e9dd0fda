// The official JavaScript client (cometd 9 + cometd-nodejs-client 2), driven line by line.
// Usage: node driver.mjs <cometd-url> <long-polling|websocket> [ack]
// stdin: one JSON command per line; stdout: one JSON event per line (tests/cometd/js_client.py).
//   {"op": "handshake", "ext": {...}}                  -> {"event": "handshake", "successful", ...}
//   {"op": "subscribe", "channel": "/a"}               -> {"event": "subscribe", "successful", ...}
//   {"op": "listen", "channel": "/service/chatV2/x"}   (messages arriving there, unsubscribed)
//   {"op": "publish", "channel": "/a", "data": {...}}  -> {"event": "publish", "successful", ...}
//   {"op": "disconnect", "ext": {...}}                 -> {"event": "disconnect", ...}
//   {"op": "bridge", "chatpush": "http://host:port"}   subscribe to /_genesys/push/* and
//      acknowledge each reliable trigger by refresh, as a bridge does -> {"event": "acknowledged"}
// Every message on a subscribed or listened channel: {"event": "message", "channel", "data"}.
// Every /meta/handshake reply, the client's own re-handshakes included: {"event": "handshake"}.
// With "ack", the AckExtension is registered. "resubscribe" on a re-handshake is the client's
// job in CometD: the driver subscribes again to what it subscribed to (in the handshake listener).
import readline from "node:readline";
import { adapt } from "cometd-nodejs-client";
adapt();
const { CometD, AckExtension } = await import("cometd");

const [url, transport, ack] = process.argv.slice(2);
const cometd = new CometD();
if (transport === "long-polling") cometd.unregisterTransport("websocket");
if (ack === "ack") cometd.registerExtension("ack", new AckExtension());
cometd.configure({ url, logLevel: process.env.CP_LOG || "warn", maxBackoff: 500 });

const say = (event, data) => process.stdout.write(JSON.stringify({ event, ...data }) + "\n");
const subscribed = new Set();
let handshakes = 0;

const onMessage = (message) => say("message", { channel: message.channel, data: message.data });

cometd.addListener("/meta/handshake", (reply) => {
  handshakes += 1;
  say("handshake", {
    successful: reply.successful, error: reply.error, count: handshakes, clientId: reply.clientId,
    transport: cometd.getTransport() ? cometd.getTransport().type : null,
    ack: reply.ext ? reply.ext.ack : undefined,
  });
  if (reply.successful && handshakes > 1) {
    cometd.batch(() => {
      for (const channel of subscribed) cometd.subscribe(channel, onMessage);
    });
  }
});
cometd.addListener("/meta/connect", (reply) => {
  if (!reply.successful) say("connect-failed", { error: reply.error, advice: reply.advice });
});

const commands = readline.createInterface({ input: process.stdin });
for await (const line of commands) {
  const command = JSON.parse(line);
  switch (command.op) {
    case "handshake":
      cometd.handshake(command.ext ? { ext: command.ext } : {}, () => {});
      break;
    case "subscribe":
      cometd.subscribe(command.channel, onMessage, (reply) => {
        if (reply.successful) subscribed.add(command.channel);
        say("subscribe", { channel: command.channel, successful: reply.successful, error: reply.error });
      });
      break;
    case "listen":
      cometd.addListener(command.channel, onMessage);
      break;
    case "publish":
      cometd.publish(command.channel, command.data, (reply) => {
        say("publish", { channel: command.channel, successful: reply.successful, error: reply.error });
      });
      break;
    case "disconnect":
      cometd.disconnect(command.ext ? { ext: command.ext } : {}, (reply) => {
        say("disconnect", { successful: reply.successful });
      });
      break;
    case "bridge":
      cometd.subscribe("/_genesys/push/*", (message) => {
        onMessage(message);
        const event = ((message.data.message || {}).messages || [])[0] || {};
        const userData = event.userData || {};
        if (event.type !== "PushUrl" || !userData["session-id"]) return;
        const form = new URLSearchParams({
          secureKey: userData["secure-key"], transcriptPosition: userData["notify-position"],
        });
        const chatId = encodeURIComponent(userData["session-id"]);
        fetch(`${command.chatpush}/genesys/2/chat/${command.service}/${chatId}/refresh`, {
          method: "POST", body: form,
        }).then(async (reply) => {
          const body = await reply.json();
          say("acknowledged", { status: reply.status, position: userData["notify-position"],
                                statusCode: body.statusCode });
        });
      }, (reply) => say("subscribe", { channel: "/_genesys/push/*", successful: reply.successful,
                                       error: reply.error }));
      break;
    case "exit":
      process.exit(0);
  }
}
