// Offline interop check: sigstore-js verifies one airgap-bundle signature file against a public key.
// Usage: node verify.mjs SIGNATURE.sigstore.json PUBLIC_KEY.pem STATEMENT_FILE
// Prints "ok <hint>" and exits 0 when valid; prints the error and exits 1 otherwise.
// No transparency log, no timestamps: the trust material is the given key alone.
import { readFileSync } from 'node:fs';
import { createPublicKey } from 'node:crypto';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const { bundleFromJSON } = require('@sigstore/bundle');
const { Verifier, toSignedEntity } = require('@sigstore/verify');

const [sigPath, keyPath, statementPath] = process.argv.slice(2);
try {
  const bundle = bundleFromJSON(JSON.parse(readFileSync(sigPath, 'utf8')));
  const publicKey = createPublicKey(readFileSync(keyPath));
  const trustMaterial = {
    certificateAuthorities: [],
    timestampAuthorities: [],
    tlogs: [],
    ctlogs: [],
    publicKey: (hint) => ({ publicKey, validFor: () => true }),
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
