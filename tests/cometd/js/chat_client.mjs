// A chat over CometD with the official JavaScript client (cometd 9 + cometd-nodejs-client 2).
// Usage: node chat_client.mjs <cometd-url> <service> <long-polling|websocket>
// Prints one JSON line per step on stdout; the test drives the agent side and reads them.
import { adapt } from "cometd-nodejs-client";
adapt();
const { CometD } = await import("cometd");

const [url, service, transport] = process.argv.slice(2);
const channel = `/service/chatV2/${service}`;
const cometd = new CometD();
if (transport === "long-polling") cometd.unregisterTransport("websocket");
cometd.configure({ url, logLevel: process.env.CP_LOG || "warn" });

const say = (step, data) => process.stdout.write(JSON.stringify({ step, ...data }) + "\n");
const fail = (why) => { say("failed", { why }); process.exit(1); };
setTimeout(() => fail("timed out"), 20000);

let chat = null;
cometd.addListener(channel, (message) => {
  const data = message.data;
  if (!chat && data.chatId) {
    chat = { chatId: data.chatId, secureKey: data.secureKey };
    say("chat", { ...chat, transport: cometd.getTransport().type });
    return;
  }
  for (const event of data.messages || []) {
    if (event.type === "Message" && event.text === "hello from the agent") {
      say("agent", { index: event.index });
      cometd.publish(channel, {
        operation: "sendMessage", chatId: chat.chatId, secureKey: chat.secureKey,
        message: "thanks, bye",
      }, (reply) => {
        if (!reply.successful) fail("sendMessage not accepted");
        say("sent", {});
        cometd.disconnect(() => process.exit(0));
      });
    }
  }
});

cometd.handshake((reply) => {
  if (!reply.successful) fail("handshake: " + JSON.stringify(reply));
  cometd.publish(channel, { operation: "requestChat", nickname: "Node" });
});
