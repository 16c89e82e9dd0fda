// The official CometD Node.js server (cometd-nodejs-server, npm), for benchmarks/cometd.py.
// Usage: node cometd_node_server.mjs <port>. Same settings as benchmarks/cometd_server.py gives
// chatpush's server: connects held up to 30 s, sessions kept 120 s without a connect; client
// publishes to broadcast channels are allowed by default.
import http from "node:http";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const cometd = require("cometd-nodejs-server");

const port = Number(process.argv[2]);
const server = cometd.createCometDServer({ timeout: 30000, maxInterval: 120000 });
const httpServer = http.createServer(server.handle);
httpServer.keepAliveTimeout = 75000; // aiohttp's default, so idle publishers are not cut off
httpServer.listen(port, "127.0.0.1", () => console.log(JSON.stringify({ listening: port })));
