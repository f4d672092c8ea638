/**
 * Patients on the network (DESIGN.md §1, §6): `POST /ledger/tx` orders a tx a patient (or proxy) signed
 * themselves (registration, consent grant, consent revocation; the signature is the authentication), and
 * `Patient/{id}/$link` links a registered patient to a local Patient with the patient's signed approval
 * (GET gives the terms to sign; POST, by the custodian's staff, commits the `patient.link`).
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { HlError, fromBase64, toBase64Url } from '../kernel/index.js';
import type { TxReceipt } from '../ledger/index.js';

const fhirJson = 'application/fhir+json; charset=utf-8';
const idPattern = /^[A-Za-z0-9\-.]{1,64}$/;

/** What a patient signs to be linked to a custodian's record. */
export interface LinkTerms {
  origin: string;
  custodian: string;
  pseudonym: string;
}

/** What the patient routes need from the node. */
export interface PatientRouteDeps {
  submitPatientTx(bytes: Uint8Array): Promise<TxReceipt>;
  patientLinkTerms(id: string): Promise<LinkTerms>;
  linkPatient(id: string, patient: string, patientSig: string): Promise<TxReceipt>;
}

function receiptJson(r: TxReceipt): Record<string, unknown> {
  return { txId: r.txId, height: r.height, leafIndex: r.leafIndex };
}

/** The value of a named parameter of a FHIR Parameters body, checked for its type. */
function parameter(body: unknown, name: string, valueKey: string): string {
  const b = body as { resourceType?: unknown; parameter?: unknown } | null;
  if (typeof b !== 'object' || b === null || b.resourceType !== 'Parameters' || !Array.isArray(b.parameter)) {
    throw new HlError('invalid', 'the body must be a FHIR Parameters resource');
  }
  const found = (b.parameter as Record<string, unknown>[]).filter((p) => p?.name === name);
  if (found.length !== 1 || typeof found[0]![valueKey] !== 'string') {
    throw new HlError('invalid', `Parameters must hold exactly one "${name}" with ${valueKey}`, {
      issues: [{ code: 'invalid', expression: `Parameters.parameter.where(name='${name}')`, message: `one ${valueKey} is required` }],
    });
  }
  return found[0]![valueKey] as string;
}

/**
 * Registers `POST /ledger/tx` and `GET|POST /fhir/Patient/{id}/$link`. `requireStaff` refuses a request not
 * made by the custodian's own staff: linking a key to a record gives that key the patient's own access, so
 * only the custodian may vouch for it (apps, patients and other organizations may not).
 */
export function registerPatientRoutes(app: FastifyInstance, deps: PatientRouteDeps, requireStaff: (req: FastifyRequest) => void): void {
  app.post('/ledger/tx', async (req) => {
    if (typeof req.body !== 'object' || req.body === null) throw new HlError('invalid', 'the body must be a signed tx (a JSON object)');
    const receipt = await deps.submitPatientTx(new TextEncoder().encode(JSON.stringify(req.body)));
    return receiptJson(receipt);
  });

  app.get<{ Params: { id: string } }>('/fhir/Patient/:id/$link', async (req, reply) => {
    requireStaff(req);
    if (!idPattern.test(req.params.id)) throw new HlError('invalid', 'id must match [A-Za-z0-9-.]{1,64}');
    const terms = await deps.patientLinkTerms(req.params.id);
    return reply.type(fhirJson).send({
      resourceType: 'Parameters',
      parameter: [
        { name: 'origin', valueString: terms.origin },
        { name: 'custodian', valueString: terms.custodian },
        { name: 'pseudonym', valueString: terms.pseudonym },
      ],
    });
  });

  app.post<{ Params: { id: string } }>('/fhir/Patient/:id/$link', async (req, reply) => {
    requireStaff(req);
    if (!idPattern.test(req.params.id)) throw new HlError('invalid', 'id must match [A-Za-z0-9-.]{1,64}');
    const patient = parameter(req.body, 'patient', 'valueString');
    let signature: string;
    try {
      signature = toBase64Url(fromBase64(parameter(req.body, 'signature', 'valueBase64Binary')));
    } catch (err) {
      if (err instanceof HlError && err.message.startsWith('Parameters')) throw err;
      throw new HlError('invalid', 'signature must be base64Binary');
    }
    const receipt = await deps.linkPatient(req.params.id, patient, signature);
    return reply.type(fhirJson).send({
      resourceType: 'Parameters',
      parameter: [
        { name: 'patient', valueString: patient },
        { name: 'txId', valueString: receipt.txId },
        { name: 'leafIndex', valueInteger64: String(receipt.leafIndex) },
      ],
    });
  });
}
