/**
 * @module crypto
 * SHA-256, RFC 8785 canonical JSON, Ed25519 keys/sign/verify, AES-256-GCM envelope encryption and key
 * wrapping, HMAC for blind indexes. May import: kernel.
 */
export { hmacSha256, hmacSha256With, sha256 } from './hash.js';
export { canonicalBytes, canonicalJson } from './canonical-json.js';
export {
  ed25519KeyId,
  exportPem,
  exportPrivateJwk,
  exportPublicJwk,
  generateEd25519KeyPair,
  importEd25519PrivateKey,
  importEd25519PublicKey,
  rawPublicKey,
  signEd25519,
  signEd25519Async,
  verifyEd25519,
  type Ed25519KeyPair,
  type Ed25519PrivateJwk,
  type Ed25519PublicJwk,
} from './ed25519.js';
export { Ed25519VerifierPool, type SignatureCheck } from './ed25519-pool.js';
export {
  aesKeyBytes,
  generateAesKey,
  kekIdOf,
  open,
  openEnvelope,
  rewrapKey,
  seal,
  sealEnvelope,
  unwrapKey,
  wrapKey,
  type Envelope,
} from './envelope.js';
