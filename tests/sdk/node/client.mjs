// Posts and verifies exactly as the vendor's JavaScript SDK 2.x does (http/http-client.js: request,
// _makeHttpRequest, _verifyResponse): paths resolved against the host root (/v1/<name>), a JSON body with
// api_key beside the Bearer header, the body read as text chunk by chunk, and the signature checked over
// JSON.stringify of the envelope without "signature".
// Usage: node client.mjs BASE_URL API_KEY PUBLIC_KEY_PEM_FILE CALLS_JSON_FILE
// Prints one JSON line per call: {"operation","http","code","scheme","verified","tampered_verified"}.
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';

const [baseUrl, apiKey, pemFile, callsFile] = process.argv.slice(2);
const publicKey = fs.readFileSync(pemFile, 'utf8');
const calls = JSON.parse(fs.readFileSync(callsFile, 'utf8'));

function post(url, headers, data) {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: 'POST', headers, timeout: 30000 }, (res) => {
      let body = '';
      res.on('data', (chunk) => { body += chunk; });
      res.on('end', () => resolve({ statusCode: res.statusCode, headers: res.headers, data: JSON.parse(body) }));
    });
    req.on('error', reject);
    req.write(JSON.stringify(data));
    req.end();
  });
}

function sdkVerify(response) {
  const responseWithoutSignature = { ...response };
  delete responseWithoutSignature.signature;
  const payload = JSON.stringify(responseWithoutSignature);
  return crypto.verify('sha256', Buffer.from(payload), publicKey, Buffer.from(response.signature, 'base64'));
}

let failed = false;
for (const call of calls) {
  const data = { license_key: call.license_key, meta_key: call.meta_key };
  if ('meta_value' in call) data.meta_value = call.meta_value;
  data.api_key = apiKey;
  const url = new URL(`/v1/${call.operation}-license-key-meta`, baseUrl);
  const response = await post(url, {
    'Authorization': `Bearer ${apiKey}`,
    'Content-Type': 'application/json',
    'Accept': 'application/json',
    'User-Agent': 'GetKeyManager-JS-SDK/2.0.0',
  }, data);
  const verified = Boolean(response.data.signature) && sdkVerify(response.data);
  // The same check on a response altered after signing must fail, or the check proves nothing.
  const tampered = { ...response.data, response: { ...response.data.response } };
  tampered.response.message += '!';
  const tamperedVerified = Boolean(tampered.signature) && sdkVerify(tampered);
  failed = failed || !verified || tamperedVerified;
  console.log(JSON.stringify({
    operation: call.operation, http: response.statusCode, code: response.data.response?.code ?? null,
    scheme: response.headers['x-signature-scheme'] ?? null, verified, tampered_verified: tamperedVerified,
  }));
}
process.exit(failed ? 1 : 0);
