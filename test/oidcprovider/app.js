// A stand-in application for trying sign-in locally: it shows what reaches
// it through the proxy (sessiongate's identity headers, whether an access
// token came, the cookies it got). Run: node app.js [port], default 8080.
import { createServer } from 'node:http';

const port = Number(process.argv[2] || 8080);
const esc = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

createServer((req, res) => {
  const rows = Object.entries(req.headers)
    .filter(([k]) => k.startsWith('x-sessiongate-') || k === 'authorization' || k === 'cookie')
    .map(([k, v]) => [k, k === 'authorization' ? `${String(v).slice(0, 16)}… (${String(v).length} characters)` : v])
    .map(([k, v]) => `<tr><th>${esc(k)}</th><td>${esc(v)}</td></tr>`)
    .join('');
  res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
  res.end(`<!doctype html><title>application</title><h1>hello from the application</h1>
<p>${esc(req.method)} ${esc(req.url)}</p><table>${rows}</table>
<p><a href="/logout">Sign out</a></p>`);
}).listen(port, '127.0.0.1');
