#!/usr/bin/env node
// A minimal MLLP server built on the npm `simple-hl7` package, a peer for the
// `mllp` benchmark: simple-hl7 parses each message and builds its AA ACK
// (MSA-2 = the message's MSH-10); we send it back and store nothing.
//
//     node simple_hl7_peer.js PORT [HOST]
//
// Prints "ready" on stdout once it listens (HOST defaults to 127.0.0.1).
'use strict';

const hl7 = require('simple-hl7');

const port = Number(process.argv[2]);
const host = process.argv[3] || '127.0.0.1';
if (!Number.isInteger(port) || port <= 0 || port > 65535) {
  console.error('usage: node simple_hl7_peer.js PORT [HOST]');
  process.exit(2);
}

const app = hl7.tcp();

app.use(function (req, res, next) {
  // req.msg is the parsed message; res.ack the ACK simple-hl7 built for it.
  res.end();
});

// simple-hl7's TcpServer.start(port) calls net.Server.listen(port): passing
// listen's options object instead binds to `host` only (its default is every
// interface) and lets us say "ready" once the socket listens.
const server = app.start({ port: port, host: host });
server.server.on('listening', function () {
  process.stdout.write('ready\n');
});
server.server.on('error', function (err) {
  console.error('simple_hl7_peer: ' + err.message);
  process.exit(1);
});
