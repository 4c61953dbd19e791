// Offline interop check: sigstore-js verifies one airgap-bundle signature file against public keys.
// Usage: node verify.mjs SIGNATURE.sigstore.json PUBLIC_KEY.pem STATEMENT_FILE [MORE_KEYS.pem...]
// Prints "ok <hint>" and exits 0 when valid; prints the error and exits 1 otherwise.
// No transparency log, no timestamps: the trust material is the given keys alone, each known by its
// sigstore-go hint (base64 of the sha256 of the DER SubjectPublicKeyInfo); sigstore-js picks the key
// by the bundle's publicKey.hint, so a bundle with another hint form finds no key.
import { readFileSync } from 'node:fs';
import { createHash, createPublicKey } from 'node:crypto';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const { bundleFromJSON } = require('@sigstore/bundle');
const { Verifier, toSignedEntity } = require('@sigstore/verify');

const [sigPath, keyPath, statementPath, ...moreKeys] = process.argv.slice(2);
try {
  const bundle = bundleFromJSON(JSON.parse(readFileSync(sigPath, 'utf8')));
  const keyring = new Map();
  for (const path of [...moreKeys, keyPath]) {
    const key = createPublicKey(readFileSync(path));
    const hint = createHash('sha256').update(key.export({ type: 'spki', format: 'der' })).digest('base64');
    keyring.set(hint, key);
  }
  const trustMaterial = {
    certificateAuthorities: [],
    timestampAuthorities: [],
    tlogs: [],
    ctlogs: [],
    publicKey: (hint) => {
      if (!keyring.has(hint)) throw Object.assign(new Error(`no key with hint ${hint}`), { code: 'NO_KEY' });
      return { publicKey: keyring.get(hint), validFor: () => true };
    },
  };
  const verifier = new Verifier(trustMaterial, { tlogThreshold: 0, ctlogThreshold: 0, timestampThreshold: 0 });
  const entity = toSignedEntity(bundle);
  verifier.verify(entity);
  // The DSSE payload must also be the statement the bundle carries, byte for byte.
  const payload = Buffer.from(bundle.content.dsseEnvelope.payload);
  if (statementPath && !payload.equals(readFileSync(statementPath))) {
    throw new Error('payload differs from the statement file');
  }
  console.log(`ok ${bundle.verificationMaterial.content.publicKey?.hint ?? ''}`);
} catch (e) {
  console.log(`fail ${e.code ?? ''} ${e.message}`);
  process.exit(1);
}
