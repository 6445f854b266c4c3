// A local SMTP sink for tests: a real SMTP server (nodemailer's smtp-server) that keeps
// every message in memory and lists them over HTTP.
//   node end2end/smtp-sink.cjs SMTP_PORT HTTP_PORT
//   GET /messages            -> [{ from, to: [...], data }] (raw RFC 5322 text)
//   GET /messages?to=ADDRESS -> only messages addressed to ADDRESS
//   DELETE /messages         -> clears the store
// Like a real server, it refuses some recipients for good: any address at
// `rejected.test` gets "550 No such user here" (a permanent failure).
const { SMTPServer } = require('smtp-server');
const http = require('http');

const smtpPort = Number(process.argv[2] || 2525);
const httpPort = Number(process.argv[3] || 2580);
const messages = [];

const smtp = new SMTPServer({
  authOptional: true,
  disabledCommands: ['STARTTLS'],
  logger: false,
  onRcptTo(address, session, callback) {
    if (address.address.toLowerCase().endsWith('@rejected.test')) {
      const err = new Error('No such user here');
      err.responseCode = 550;
      return callback(err);
    }
    callback();
  },
  onData(stream, session, callback) {
    let data = '';
    stream.setEncoding('utf8');
    stream.on('data', (chunk) => (data += chunk));
    stream.on('end', () => {
      messages.push({
        from: session.envelope.mailFrom && session.envelope.mailFrom.address,
        to: session.envelope.rcptTo.map((r) => r.address.toLowerCase()),
        data,
      });
      callback();
    });
  },
});
smtp.listen(smtpPort, '127.0.0.1');

http
  .createServer((req, res) => {
    const url = new URL(req.url, 'http://localhost');
    if (url.pathname !== '/messages') {
      res.writeHead(404).end();
      return;
    }
    if (req.method === 'DELETE') {
      messages.length = 0;
      res.writeHead(204).end();
      return;
    }
    const to = url.searchParams.get('to');
    const list = to ? messages.filter((m) => m.to.includes(to.toLowerCase())) : messages;
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(list));
  })
  .listen(httpPort, '127.0.0.1', () => console.log(`smtp sink: smtp://127.0.0.1:${smtpPort}, http://127.0.0.1:${httpPort}/messages`));
