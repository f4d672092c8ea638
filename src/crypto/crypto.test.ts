import { createHash, createHmac, generateKeyPairSync } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import canonicalizeOracle from 'canonicalize';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { HlError, fromHex, toHex, utf8 } from '../kernel/index.js';
import {
  canonicalBytes,
  canonicalJson,
  ed25519KeyId,
  exportPem,
  exportPrivateJwk,
  exportPublicJwk,
  generateAesKey,
  generateEd25519KeyPair,
  hmacSha256,
  hmacSha256With,
  importEd25519PrivateKey,
  importEd25519PublicKey,
  kekIdOf,
  open,
  openEnvelope,
  rawPublicKey,
  rewrapKey,
  seal,
  sealEnvelope,
  sha256,
  signEd25519,
  unwrapKey,
  verifyEd25519,
  wrapKey,
  type Ed25519PrivateJwk,
  type Ed25519PublicJwk,
} from './index.js';
import { hlErrorOf } from '../../test/hl-error.js';


const hex = (b: Uint8Array): string => toHex(b);

describe('SHA-256 and HMAC-SHA-256', () => {
  it('match FIPS 180-4 and RFC 4231 vectors', () => {
    expect(hex(sha256(utf8('abc')))).toBe('ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad');
    expect(hex(sha256(new Uint8Array(0)))).toBe('e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855');
    // RFC 4231 test case 2.
    expect(hex(hmacSha256(utf8('Jefe'), utf8('what do ya want for nothing?')))).toBe(
      '5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843',
    );
  });
});

describe('hmacSha256With (one key, many messages)', () => {
  it('matches RFC 4231 and node:crypto for short, block-sized and long keys and messages', () => {
    expect(hex(hmacSha256With(utf8('Jefe'))(utf8('what do ya want for nothing?')))).toBe(
      '5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843',
    );
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 0, maxLength: 150 }), fc.array(fc.uint8Array({ maxLength: 300 }), { minLength: 1, maxLength: 4 }), (key, messages) => {
        const mac = hmacSha256With(key);
        for (const m of messages) expect(hex(mac(m))).toBe(createHmac('sha256', key).update(m).digest('hex'));
      }),
      { numRuns: 300 },
    );
  });

  it('gives each call its own result (no buffer shared between calls)', () => {
    const mac = hmacSha256With(new Uint8Array(32).fill(7));
    const a = mac(utf8('a'));
    const keep = hex(a);
    mac(utf8('b'));
    expect(hex(a)).toBe(keep);
  });
});

describe('canonicalJson (RFC 8785 JCS)', () => {
  it('reproduces the RFC 8785 §3.2.2 / §3.2.4 example', () => {
    const input = String.raw`{
      "numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],
      "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
      "literals": [null, true, false]
    }`;
    const want = String.raw`{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],"string":"€$\u000f\nA'B\"\\\\\"/"}`;
    expect(canonicalJson(JSON.parse(input))).toBe(want);
    // §3.2.4: the canonical form is UTF-8; the euro sign is e2 82 ac.
    const bytes = canonicalBytes(JSON.parse(input));
    expect(hex(bytes)).toBe(Buffer.from(want, 'utf8').toString('hex'));
    expect(hex(bytes)).toContain('22e282ac245c7530303066');
  });

  it('sorts keys by UTF-16 code units, not code points or locale (RFC 8785 §3.2.3 example)', () => {
    const input = String.raw`{
      "\u20ac": "Euro Sign",
      "\r": "Carriage Return",
      "\ufb33": "Hebrew Letter Dalet With Dagesh",
      "1": "One",
      "\ud83d\ude00": "Emoji: Grinning Face",
      "\u0080": "Control",
      "\u00f6": "Latin Small Letter O With Diaeresis"
    }`;
    const want =
      '{"\\r":"Carriage Return","1":"One","\u0080":"Control","\u00f6":"Latin Small Letter O With Diaeresis",' +
      '"\u20ac":"Euro Sign","\ud83d\ude00":"Emoji: Grinning Face","\ufb33":"Hebrew Letter Dalet With Dagesh"}';
    expect(canonicalJson(JSON.parse(input))).toBe(want);
  });

  it('matches the reference implementation test file "weird.json" (cyberphone/json-canonicalization)', () => {
    const input = String.raw`{
      "\u20ac": "Euro Sign",
      "1": "One",
      "\u0080": "Control\u007f",
      "\ud83d\ude02": "Smiley",
      "\u00f6": "Latin Small Letter O With Diaeresis",
      "\ufb33": "Hebrew Letter Dalet With Dagesh",
      "</script>": "Browser Challenge"
    }`;
    const want =
      '{"1":"One","</script>":"Browser Challenge","\u0080":"Control\u007f","\u00f6":"Latin Small Letter O With Diaeresis",' +
      '"\u20ac":"Euro Sign","\ud83d\ude02":"Smiley","\ufb33":"Hebrew Letter Dalet With Dagesh"}';
    expect(canonicalJson(JSON.parse(input))).toBe(want);
  });

  it('sorts nested objects recursively and keeps array order', () => {
    const value = { b: [3, 1, { z: 1, a: 2 }], a: { y: null, x: { d: true, c: false } } };
    expect(canonicalJson(value)).toBe('{"a":{"x":{"c":false,"d":true},"y":null},"b":[3,1,{"a":2,"z":1}]}');
  });

  // RFC 8785 Appendix B: IEEE 754 bit patterns and their required serialization.
  it.each([
    ['0000000000000000', '0'],
    ['8000000000000000', '0'],
    ['0000000000000001', '5e-324'],
    ['8000000000000001', '-5e-324'],
    ['7fefffffffffffff', '1.7976931348623157e+308'],
    ['ffefffffffffffff', '-1.7976931348623157e+308'],
    ['4340000000000000', '9007199254740992'],
    ['c340000000000000', '-9007199254740992'],
    ['4430000000000000', '295147905179352830000'],
    ['44b52d02c7e14af5', '9.999999999999997e+22'],
    ['44b52d02c7e14af6', '1e+23'],
    ['44b52d02c7e14af7', '1.0000000000000001e+23'],
    ['444b1ae4d6e2ef4e', '999999999999999700000'],
    ['444b1ae4d6e2ef4f', '999999999999999900000'],
    ['444b1ae4d6e2ef50', '1e+21'],
    ['3eb0c6f7a0b5ed8c', '9.999999999999997e-7'],
    ['3eb0c6f7a0b5ed8d', '0.000001'],
    ['41b3de4355555553', '333333333.3333332'],
    ['41b3de4355555554', '333333333.33333325'],
    ['41b3de4355555555', '333333333.3333333'],
    ['41b3de4355555556', '333333333.3333334'],
    ['41b3de4355555557', '333333333.33333343'],
    ['becbf647612f3696', '-0.0000033333333333333333'],
    ['43143ff3c1cb0959', '1424953923781206.2'],
  ])('serializes the number with bits %s as %s (RFC 8785 Appendix B)', (bits, want) => {
    const view = new DataView(new ArrayBuffer(8));
    view.setBigUint64(0, BigInt(`0x${bits}`));
    const value = view.getFloat64(0);
    expect(canonicalJson(value)).toBe(want);
    expect(canonicalJson([value])).toBe(`[${want}]`);
  });

  it('normalizes number spellings from JSON text: 1e21, 1E-7, -0, 4.50, 1e20', () => {
    expect(canonicalJson(JSON.parse('[1e21, 1E-7, -0, 4.50, 1e20, 1.0, -1E+2]'))).toBe(
      '[1e+21,1e-7,0,4.5,100000000000000000000,1,-100]',
    );
  });

  it('escapes exactly what RFC 8785 §3.2.2.2 requires', () => {
    let controls = '';
    for (let c = 0; c < 0x20; c++) controls += String.fromCharCode(c);
    const short: Record<number, string> = { 0x08: '\\b', 0x09: '\\t', 0x0a: '\\n', 0x0c: '\\f', 0x0d: '\\r' };
    let want = '"';
    for (let c = 0; c < 0x20; c++) want += short[c] ?? `\\u00${c.toString(16).padStart(2, '0')}`;
    want += '\\"\\\\/\u007f\u2028\u2029\ud83d\ude00"';
    expect(canonicalJson(`${controls}"\\/\u007f\u2028\u2029\ud83d\ude00`)).toBe(want);
  });

  it('is independent of key insertion order and round-trips through JSON.parse', () => {
    fc.assert(
      fc.property(fc.jsonValue(), (value) => {
        const text = canonicalJson(value);
        expect(JSON.parse(text)).toEqual(JSON.parse(JSON.stringify(value)));
        // Canonical text is a fixed point.
        expect(canonicalJson(JSON.parse(text))).toBe(text);
        // Reversing every object's key insertion order changes nothing.
        const reversed = JSON.parse(JSON.stringify(value), (_k, v: unknown) =>
          v !== null && typeof v === 'object' && !Array.isArray(v)
            ? Object.fromEntries(Object.entries(v as Record<string, unknown>).reverse())
            : v,
        );
        expect(canonicalJson(reversed)).toBe(text);
      }),
      { numRuns: 300 },
    );
  });

  it("writes what the RFC author's implementation (the canonicalize package) writes, for any JSON and for Synthea resources", () => {
    const oracle = canonicalizeOracle as unknown as (value: unknown) => string;
    // Any UTF-16 code unit, lone surrogates included (JSON.parse accepts them; JSON.stringify escapes them).
    const codeUnit = fc.integer({ min: 0, max: 0xffff }).map((c) => String.fromCharCode(c));
    for (const odd of ['\ud800', 'a\udc00b', '\udbff\udfff', '\u2028', '\u007f', 'x"y\\z']) {
      expect(canonicalJson({ [odd]: odd })).toBe(oracle({ [odd]: odd }));
    }
    fc.assert(
      fc.property(fc.jsonValue({ depthSize: 'medium' }), fc.string({ unit: codeUnit }), fc.string({ unit: 'grapheme-composite' }), (value, binary, text) => {
        // Lone surrogates, controls and astral characters as keys and values, next to whatever jsonValue made.
        const mixed = { [binary]: text, [text]: [binary, value], value };
        expect(canonicalJson(mixed)).toBe(oracle(mixed));
        expect(canonicalJson(value)).toBe(oracle(value));
      }),
      { numRuns: 500 },
    );
    const dir = new URL('../../test/vectors/synthea/', import.meta.url);
    let resources = 0;
    for (const file of readdirSync(dir).filter((f) => f.endsWith('.json'))) {
      const bundle = JSON.parse(readFileSync(new URL(file, dir), 'utf8')) as { entry?: { resource: unknown }[] };
      for (const e of bundle.entry ?? []) {
        expect(canonicalJson(e.resource)).toBe(oracle(e.resource));
        resources++;
      }
    }
    expect(resources).toBeGreaterThan(1000);
  });

  it('has no insignificant whitespace', () => {
    expect(canonicalJson({ a: [1, { b: ' x ' }] })).toBe('{"a":[1,{"b":" x "}]}');
  });

  it.each([
    ['NaN', NaN],
    ['Infinity', Infinity],
    ['-Infinity', -Infinity],
    ['NaN nested in an object', { a: NaN }],
    ['Infinity nested in an array', [1, Infinity]],
    ['undefined at the top', undefined],
    ['a bigint', 1n],
    ['a nested bigint', { n: 1n }],
    ['a function at the top', () => 1],
  ])('rejects %s with HlError invalid', (_name, value) => {
    expect(hlErrorOf(() => canonicalJson(value)).code).toBe('invalid');
  });

  it('never returns text that is not JSON (a nested function is rejected, not written as `undefined`)', () => {
    for (const value of [{ a: () => 1 }, [() => 1], { a: [1, { b: () => 2 }] }]) {
      let text: string | undefined;
      try {
        text = canonicalJson(value);
      } catch (err) {
        expect(err).toBeInstanceOf(HlError);
        expect((err as HlError).code).toBe('invalid');
        continue;
      }
      expect(() => JSON.parse(text), `canonicalJson produced ${text}`).not.toThrow();
    }
  });

  it('treats undefined members as JSON.stringify does, so what is signed is what the receiver re-canonicalizes', () => {
    const value = { a: 1, b: undefined, c: [undefined, 2] };
    expect(canonicalJson(value)).toBe(canonicalJson(JSON.parse(JSON.stringify(value))));
    expect(canonicalJson(value)).toBe('{"a":1,"c":[null,2]}');
  });
});

// RFC 8037 Appendix A (the same key as RFC 8032 §7.1 TEST 1).
const rfc8037 = {
  d: 'nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A',
  x: '11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo',
  // RFC 8037 A.3: the RFC 7638 thumbprint of the public key.
  thumbprint: 'kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k',
  // RFC 8037 A.4: JWS signing input and signature.
  signingInput: 'eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc',
  signature: 'hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg',
};

/** RFC 7638 §3 thumbprint written out independently: required members, sorted, no whitespace, SHA-256, base64url. */
function rfc7638Thumbprint(x: string): string {
  return createHash('sha256').update(`{"crv":"Ed25519","kty":"OKP","x":"${x}"}`, 'utf8').digest('base64url');
}

describe('Ed25519 keys', () => {
  const rfcPrivate: Ed25519PrivateJwk = { kty: 'OKP', crv: 'Ed25519', d: rfc8037.d, x: rfc8037.x };

  it('computes the RFC 7638 thumbprint of the RFC 8037 example key as its key id', () => {
    const pair = importEd25519PrivateKey(rfcPrivate);
    expect(pair.keyId).toBe(rfc8037.thumbprint);
    expect(rfc7638Thumbprint(rfc8037.x)).toBe(rfc8037.thumbprint);
    expect(ed25519KeyId(importEd25519PublicKey({ kty: 'OKP', crv: 'Ed25519', x: rfc8037.x }))).toBe(rfc8037.thumbprint);
  });

  it('signs the RFC 8037 A.4 example and the RFC 8032 §7.1 TEST 1 message byte for byte', () => {
    const { privateKey, publicKey } = importEd25519PrivateKey(rfcPrivate);
    expect(hex(rawPublicKey(publicKey))).toBe('d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a');
    const sig = signEd25519(privateKey, utf8(rfc8037.signingInput));
    expect(Buffer.from(sig).toString('base64url')).toBe(rfc8037.signature);
    expect(verifyEd25519(publicKey, utf8(rfc8037.signingInput), sig)).toBe(true);
    expect(hex(signEd25519(privateKey, new Uint8Array(0)))).toBe(
      'e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b',
    );
  });

  it('generates key pairs whose key id is the RFC 7638 thumbprint of the public key', () => {
    const pair = generateEd25519KeyPair();
    const jwk = exportPublicJwk(pair.publicKey);
    expect(jwk.kty).toBe('OKP');
    expect(jwk.crv).toBe('Ed25519');
    expect(pair.keyId).toBe(rfc7638Thumbprint(jwk.x));
    expect(pair.keyId).not.toBe(generateEd25519KeyPair().keyId);
  });

  it('verifies its own signatures and rejects a changed message, a changed signature or another key', () => {
    const a = generateEd25519KeyPair();
    const b = generateEd25519KeyPair();
    const message = utf8('record.commit 42');
    const sig = signEd25519(a.privateKey, message);
    expect(sig.length).toBe(64);
    expect(verifyEd25519(a.publicKey, message, sig)).toBe(true);
    expect(verifyEd25519(a.publicKey, utf8('record.commit 43'), sig)).toBe(false);
    expect(verifyEd25519(b.publicKey, message, sig)).toBe(false);
    for (const i of [0, 31, 32, 63]) {
      const bad = Uint8Array.from(sig);
      bad[i]! ^= 0x01;
      expect(verifyEd25519(a.publicKey, message, bad)).toBe(false);
    }
    expect(verifyEd25519(a.publicKey, message, sig.subarray(0, 63))).toBe(false);
    expect(verifyEd25519(a.publicKey, message, new Uint8Array(65))).toBe(false);
  });

  it('round-trips through PEM keeping the key id and the key', () => {
    const pair = generateEd25519KeyPair();
    const privatePem = exportPem(pair.privateKey);
    const publicPem = exportPem(pair.publicKey);
    expect(privatePem).toMatch(/^-----BEGIN PRIVATE KEY-----\n/);
    expect(publicPem).toMatch(/^-----BEGIN PUBLIC KEY-----\n/);
    const again = importEd25519PrivateKey(privatePem);
    expect(again.keyId).toBe(pair.keyId);
    expect(hex(rawPublicKey(again.publicKey))).toBe(hex(rawPublicKey(pair.publicKey)));
    const pub = importEd25519PublicKey(publicPem);
    expect(ed25519KeyId(pub)).toBe(pair.keyId);
    const message = utf8('pem');
    expect(verifyEd25519(pub, message, signEd25519(again.privateKey, message))).toBe(true);
  });

  it('round-trips through JWK and raw public key bytes keeping the key id', () => {
    const pair = generateEd25519KeyPair();
    const privateJwk = exportPrivateJwk(pair.privateKey);
    expect(Object.keys(privateJwk).sort()).toEqual(['crv', 'd', 'kty', 'x']);
    const again = importEd25519PrivateKey(privateJwk);
    expect(again.keyId).toBe(pair.keyId);
    const publicJwk = exportPublicJwk(pair.privateKey);
    expect(publicJwk).toEqual({ kty: 'OKP', crv: 'Ed25519', x: privateJwk.x });
    expect(ed25519KeyId(importEd25519PublicKey(publicJwk))).toBe(pair.keyId);
    const raw = rawPublicKey(pair.publicKey);
    expect(raw.length).toBe(32);
    expect(ed25519KeyId(importEd25519PublicKey(raw))).toBe(pair.keyId);
    const message = utf8('jwk');
    expect(verifyEd25519(importEd25519PublicKey(raw), message, signEd25519(again.privateKey, message))).toBe(true);
  });

  describe('rejects what is not an Ed25519 key with HlError invalid', () => {
    const others = {
      x25519: generateKeyPairSync('x25519'),
      ed448: generateKeyPairSync('ed448'),
      'EC P-256': generateKeyPairSync('ec', { namedCurve: 'P-256' }),
      'RSA 1024': generateKeyPairSync('rsa', { modulusLength: 1024 }),
    };

    it.each(Object.entries(others))('a %s key as PEM (private and public)', (_name, pair) => {
      const privatePem = pair.privateKey.export({ format: 'pem', type: 'pkcs8' }) as string;
      const publicPem = pair.publicKey.export({ format: 'pem', type: 'spki' }) as string;
      expect(hlErrorOf(() => importEd25519PrivateKey(privatePem)).code).toBe('invalid');
      expect(hlErrorOf(() => importEd25519PublicKey(publicPem)).code).toBe('invalid');
    });

    it.each(Object.entries(others))('a %s key as JWK (private and public)', (_name, pair) => {
      const privateJwk = pair.privateKey.export({ format: 'jwk' }) as unknown as Ed25519PrivateJwk;
      const publicJwk = pair.publicKey.export({ format: 'jwk' }) as unknown as Ed25519PublicJwk;
      expect(hlErrorOf(() => importEd25519PrivateKey(privateJwk)).code).toBe('invalid');
      expect(hlErrorOf(() => importEd25519PublicKey(publicJwk)).code).toBe('invalid');
    });

    it.each([
      ['an empty string', ''],
      ['garbage text', 'not a key'],
      ['a PEM with a damaged body', '-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n'],
      ['a public key PEM', exportPem(generateEd25519KeyPair().publicKey)],
    ])('%s as a private key', (_name, material) => {
      expect(hlErrorOf(() => importEd25519PrivateKey(material)).code).toBe('invalid');
    });

    it.each([
      ['an empty string', ''],
      ['garbage text', 'not a key'],
      ['a PEM with a damaged body', '-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n'],
    ])('%s as a public key', (_name, material) => {
      expect(hlErrorOf(() => importEd25519PublicKey(material)).code).toBe('invalid');
    });

    it('raw public keys that are not 32 bytes', () => {
      for (const n of [0, 31, 33, 64]) expect(hlErrorOf(() => importEd25519PublicKey(new Uint8Array(n))).code).toBe('invalid');
    });

    it('JWKs with a wrong curve or a malformed x or d', () => {
      const x = rfc8037.x;
      const bad: unknown[] = [
        { kty: 'OKP', crv: 'X25519', x },
        { kty: 'OKP', crv: 'Ed448', x },
        { kty: 'EC', crv: 'Ed25519', x },
        { kty: 'OKP', crv: 'Ed25519', x: 'AAAA' },
        { kty: 'OKP', crv: 'Ed25519', x: 'not base64url!' },
      ];
      for (const jwk of bad) expect(hlErrorOf(() => importEd25519PublicKey(jwk as Ed25519PublicJwk)).code).toBe('invalid');
      expect(hlErrorOf(() => importEd25519PrivateKey({ kty: 'OKP', crv: 'Ed25519', x, d: 'AAAA' })).code).toBe('invalid');
    });

    it('a private JWK whose x is not the public key of its d', () => {
      const other = exportPublicJwk(generateEd25519KeyPair().publicKey).x;
      expect(hlErrorOf(() => importEd25519PrivateKey({ kty: 'OKP', crv: 'Ed25519', d: rfc8037.d, x: other })).code).toBe(
        'invalid',
      );
    });

    it('signing with a public key', () => {
      expect(hlErrorOf(() => signEd25519(generateEd25519KeyPair().publicKey, utf8('x'))).code).toBe('invalid');
    });
  });
});

describe('AES-256-GCM seal / open', () => {
  it('opens a box built from the NIST GCM test vector (AES-256, test case 16) in the documented layout', () => {
    const key = fromHex('feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308');
    const iv = fromHex('cafebabefacedbaddecaf888');
    const aad = fromHex('feedfacedeadbeeffeedfacedeadbeefabaddad2');
    const plaintext =
      'd9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39';
    const ciphertext =
      '522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662';
    const tag = '76fc6ece0f4e1768cddf8853bb2d551b';
    // version(1) || iv(12) || ciphertext || tag(16)
    const box = fromHex(`01${hex(iv)}${ciphertext}${tag}`);
    expect(hex(open(key, box, aad))).toBe(plaintext);
    expect(hlErrorOf(() => open(key, box)).code).toBe('integrity');
  });

  it('round-trips empty, short and large plaintexts, with and without aad', () => {
    const key = generateAesKey();
    expect(key.length).toBe(32);
    for (const size of [0, 1, 15, 16, 17, 100_000]) {
      const plaintext = Uint8Array.from({ length: size }, (_, i) => (i * 7) & 255);
      const box = seal(key, plaintext);
      expect(box.length).toBe(1 + 12 + size + 16);
      expect(box[0]).toBe(1);
      expect(hex(open(key, box))).toBe(hex(plaintext));
      const aad = utf8('Patient/123/_history/1');
      expect(hex(open(key, seal(key, plaintext, aad), aad))).toBe(hex(plaintext));
    }
  });

  it('uses a fresh IV: sealing the same plaintext twice gives different boxes', () => {
    const key = generateAesKey();
    const a = seal(key, utf8('same'));
    const b = seal(key, utf8('same'));
    expect(hex(a.subarray(1, 13))).not.toBe(hex(b.subarray(1, 13)));
    expect(hex(a)).not.toBe(hex(b));
  });

  it('rejects a box with any single byte changed, as integrity', () => {
    const key = generateAesKey();
    const aad = utf8('aad');
    const box = seal(key, utf8('the quick brown fox'), aad);
    for (let i = 0; i < box.length; i++) {
      const bad = Uint8Array.from(box);
      bad[i]! ^= 0x80;
      expect(hlErrorOf(() => open(key, bad, aad)).code, `byte ${i}`).toBe('integrity');
    }
  });

  it('rejects truncated, extended and too-short boxes, as integrity', () => {
    const key = generateAesKey();
    const box = seal(key, utf8('payload'));
    expect(hlErrorOf(() => open(key, box.subarray(0, box.length - 1))).code).toBe('integrity');
    expect(hlErrorOf(() => open(key, Uint8Array.from([...box, 0]))).code).toBe('integrity');
    expect(hlErrorOf(() => open(key, box.subarray(0, 28))).code).toBe('integrity');
    expect(hlErrorOf(() => open(key, new Uint8Array(0))).code).toBe('integrity');
  });

  it('rejects a wrong aad, a missing aad and a wrong key, as integrity', () => {
    const key = generateAesKey();
    const box = seal(key, utf8('payload'), utf8('Patient/1'));
    expect(hlErrorOf(() => open(key, box, utf8('Patient/2'))).code).toBe('integrity');
    expect(hlErrorOf(() => open(key, box)).code).toBe('integrity');
    expect(hlErrorOf(() => open(generateAesKey(), box, utf8('Patient/1'))).code).toBe('integrity');
  });

  it('rejects keys that are not 256 bits, as invalid', () => {
    expect(hlErrorOf(() => seal(new Uint8Array(16), utf8('x'))).code).toBe('invalid');
    expect(hlErrorOf(() => open(new Uint8Array(31), seal(generateAesKey(), utf8('x')))).code).toBe('invalid');
  });
});

describe('key wrapping and rotation', () => {
  it('wraps and unwraps a DEK; the wrapped form does not contain the DEK', () => {
    const kek = generateAesKey();
    const dek = generateAesKey();
    const wrapped = wrapKey(kek, dek);
    expect(hex(wrapped)).not.toContain(hex(dek));
    expect(hex(unwrapKey(kek, wrapped))).toBe(hex(dek));
  });

  it('rejects unwrapping with the wrong KEK or a damaged wrapped key, as integrity', () => {
    const kek = generateAesKey();
    const wrapped = wrapKey(kek, generateAesKey());
    expect(hlErrorOf(() => unwrapKey(generateAesKey(), wrapped)).code).toBe('integrity');
    const bad = Uint8Array.from(wrapped);
    bad[bad.length - 1]! ^= 1;
    expect(hlErrorOf(() => unwrapKey(kek, bad)).code).toBe('integrity');
  });

  it('keeps wrapped keys and sealed data apart: a wrapped DEK does not open as data, nor data as a DEK', () => {
    const kek = generateAesKey();
    const dek = generateAesKey();
    expect(hlErrorOf(() => open(kek, wrapKey(kek, dek))).code).toBe('integrity');
    expect(hlErrorOf(() => unwrapKey(kek, seal(kek, dek))).code).toBe('integrity');
  });

  it('refuses to wrap something that is not a 256-bit key', () => {
    expect(hlErrorOf(() => wrapKey(generateAesKey(), new Uint8Array(16))).code).toBe('invalid');
  });

  it('rotation: after rewrap, data sealed under the DEK opens with the new KEK and not with the old one', () => {
    const oldKek = generateAesKey();
    const newKek = generateAesKey();
    const dek = generateAesKey();
    const aad = utf8('Observation/7');
    const sealed = seal(dek, utf8('{"resourceType":"Observation"}'), aad);
    const sealedBefore = hex(sealed);
    const wrappedOld = wrapKey(oldKek, dek);
    const wrappedNew = rewrapKey(oldKek, newKek, wrappedOld);

    expect(hex(wrappedNew)).not.toBe(hex(wrappedOld));
    expect(new TextDecoder().decode(open(unwrapKey(newKek, wrappedNew), sealed, aad))).toBe('{"resourceType":"Observation"}');
    expect(hlErrorOf(() => unwrapKey(oldKek, wrappedNew)).code).toBe('integrity');
    // The data itself is untouched by rotation.
    expect(hex(sealed)).toBe(sealedBefore);
  });

  it('names a KEK by a stable id that differs between keys and is not the key', () => {
    const kek = fromHex('000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f');
    const id = kekIdOf(kek);
    expect(id).toMatch(/^kek-[0-9a-f]{16}$/);
    expect(kekIdOf(Uint8Array.from(kek))).toBe(id);
    // HMAC-SHA-256(kek, "healthledger/kek-id/v1"), first 8 bytes, computed independently.
    const expected = createHmac('sha256', kek).update('healthledger/kek-id/v1').digest('hex').slice(0, 16);
    expect(id).toBe(`kek-${expected}`);
    expect(id).not.toContain(toHex(kek).slice(0, 16));
    expect(kekIdOf(generateAesKey())).not.toBe(kekIdOf(generateAesKey()));
    expect(hlErrorOf(() => kekIdOf(new Uint8Array(16))).code).toBe('invalid');
  });

  it('rotation with the wrong old KEK fails, as integrity', () => {
    const wrapped = wrapKey(generateAesKey(), generateAesKey());
    expect(hlErrorOf(() => rewrapKey(generateAesKey(), generateAesKey(), wrapped)).code).toBe('integrity');
  });

  it('envelopes: open with the KEK and aad; a wrong KEK or aad fails as integrity', () => {
    const kek = generateAesKey();
    const aad = utf8('Patient/9');
    const envelope = sealEnvelope(kek, utf8('secret'), aad);
    expect(new TextDecoder().decode(openEnvelope(kek, envelope, aad))).toBe('secret');
    expect(hlErrorOf(() => openEnvelope(generateAesKey(), envelope, aad)).code).toBe('integrity');
    expect(hlErrorOf(() => openEnvelope(kek, envelope, utf8('Patient/8'))).code).toBe('integrity');
    const newKek = generateAesKey();
    const rotated = { wrappedKey: rewrapKey(kek, newKek, envelope.wrappedKey), sealed: envelope.sealed };
    expect(new TextDecoder().decode(openEnvelope(newKek, rotated, aad))).toBe('secret');
    expect(hlErrorOf(() => openEnvelope(kek, rotated, aad)).code).toBe('integrity');
  });
});
