/**
 * Consents as FHIR R4 `Consent` resources at /fhir/Consent (DESIGN.md §6): the ledger is where consents
 * live, so reads and searches show the `consent.grant`s on the ledger (status `inactive` once revoked or
 * ended), and a create is a patient-signed `consent.grant` carried in the Consent itself, in the extension
 * {@link signedTxExtensionUrl} (base64 of the signed tx). The node checks that the Consent says exactly what
 * the signed tx says and orders it; a Consent not signed by the patient or a proxy in force is refused.
 */
import type { FastifyInstance } from 'fastify';
import { HlError, fromBase64 } from '../kernel/index.js';
import { canonicalJson } from '../crypto/index.js';
import { consentFromFhir, consentToFhir } from '../consent/index.js';
import { parseTx, patientIdPattern, type Ledger, type TxReceipt } from '../ledger/index.js';

const fhirJson = 'application/fhir+json; charset=utf-8';

/** The extension of a Consent that carries the patient-signed `consent.grant` tx (base64 of its JSON). */
export const signedTxExtensionUrl = 'https://healthledger.dev/fhir/StructureDefinition/signed-consent-tx';

/** What the Consent routes need. */
export interface ConsentRouteDeps {
  ledger: Ledger;
  nowMs: () => number;
  submitPatientTx(bytes: Uint8Array): Promise<TxReceipt>;
}

/** The network id a `patient` search value names: `pat-…` or `urn:healthledger:patient|pat-…`. */
function patientParam(value: unknown): string {
  const v = typeof value === 'string' ? value.replace(/^urn:healthledger:patient\|/, '') : '';
  if (!patientIdPattern.test(v)) throw new HlError('invalid', 'patient must be a patient network id (pat-…), optionally as urn:healthledger:patient|pat-…');
  return v;
}

/** Registers GET /fhir/Consent/{id}, GET /fhir/Consent?patient=… and POST /fhir/Consent. */
export function registerConsentRoutes(app: FastifyInstance, deps: ConsentRouteDeps): void {
  const { ledger } = deps;

  app.get<{ Params: { id: string } }>('/fhir/Consent/:id', async (req, reply) => {
    const record = /^[0-9a-f]{64}$/.test(req.params.id) ? ledger.state.consents.get(req.params.id) : undefined;
    if (!record) throw new HlError('not-found', `Consent/${req.params.id.slice(0, 64)} is not on the ledger`);
    return reply.type(fhirJson).send(consentToFhir(record, { atMs: deps.nowMs() }));
  });

  app.get<{ Querystring: Record<string, string> }>('/fhir/Consent', async (req, reply) => {
    for (const k of Object.keys(req.query)) {
      if (k !== 'patient' && k !== 'status' && k !== '_count') throw new HlError('invalid', `unsupported Consent search parameter "${k.slice(0, 40)}": use patient and status`);
    }
    if (req.query.patient === undefined) throw new HlError('invalid', 'a Consent search needs patient (a patient network id)');
    const patient = patientParam(req.query.patient);
    const atMs = deps.nowMs();
    const status = req.query.status;
    if (status !== undefined && status !== 'active' && status !== 'inactive') throw new HlError('invalid', 'status must be active or inactive');
    const consents = ledger.state
      .consentsOf(patient)
      .map((r) => consentToFhir(r, { atMs }))
      .filter((c) => status === undefined || c.status === status)
      .reverse();
    return reply.type(fhirJson).send({
      resourceType: 'Bundle',
      type: 'searchset',
      total: consents.length,
      entry: consents.map((c) => ({ fullUrl: `${req.protocol}://${req.host}/fhir/Consent/${c.id}`, resource: c, search: { mode: 'match' } })),
    });
  });

  app.post('/fhir/Consent', async (req, reply) => {
    const resource = req.body as { extension?: { url?: unknown; valueBase64Binary?: unknown }[] } | null;
    const carried = Array.isArray(resource?.extension) ? resource.extension.filter((e) => e?.url === signedTxExtensionUrl) : [];
    if (carried.length !== 1 || typeof carried[0]!.valueBase64Binary !== 'string') {
      throw new HlError('forbidden', 'a Consent must carry the patient-signed consent.grant tx in one extension ' + signedTxExtensionUrl, {
        issues: [{ code: 'forbidden', expression: 'Consent.extension', message: `one ${signedTxExtensionUrl} with valueBase64Binary is required` }],
      });
    }
    let bytes: Uint8Array;
    try {
      bytes = fromBase64(carried[0]!.valueBase64Binary as string);
    } catch {
      throw new HlError('invalid', 'the signed consent tx is not base64');
    }
    const tx = parseTx(bytes);
    if (tx.envelope.type !== 'consent.grant') throw new HlError('invalid', 'the signed tx must be a consent.grant');
    const { body, status } = consentFromFhir(resource);
    if (status !== 'active') throw new HlError('processing', 'a new Consent must be active');
    if (canonicalJson(body) !== canonicalJson(tx.envelope.body)) {
      throw new HlError('processing', 'the Consent does not say what the signed consent.grant says', {
        issues: [{ code: 'processing', expression: 'Consent', message: 'patient, provisions or proxy differ from the signed consent.grant' }],
      });
    }
    const receipt = await deps.submitPatientTx(tx.bytes);
    const record = ledger.state.consents.get(receipt.txId);
    if (!record) throw new HlError('exception', 'the consent was ordered but is not in the ledger state');
    return reply
      .code(201)
      .type(fhirJson)
      .header('Location', `${req.protocol}://${req.host}/fhir/Consent/${record.id}`)
      .send(consentToFhir(record, { atMs: deps.nowMs() }));
  });
}
