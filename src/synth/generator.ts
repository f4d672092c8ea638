/**
 * Deterministic synthetic FHIR R4 patients: one transaction Bundle per patient (Patient, Coverage,
 * encounters with vital signs and labs, conditions with their medications, allergies, immunizations,
 * procedures and a claim per encounter), all references as urn:uuid inside the bundle. The same seed gives
 * the same bytes: times come from the seed, never from the clock.
 */
import { SeededRandom } from './random.js';
import {
  allergies,
  bloodPressure,
  cities,
  conditions,
  encounterTypes,
  familyNames,
  givenNames,
  labs,
  medicationFor,
  procedures,
  streets,
  vaccines,
  vitals,
  type Coding,
} from './vocabulary.js';

type Resource = { resourceType: string } & Record<string, unknown>;

/** A FHIR transaction Bundle as the generator writes it. */
export interface TransactionBundle {
  resourceType: 'Bundle';
  type: 'transaction';
  entry: { fullUrl: string; resource: Resource; request: { method: 'POST'; url: string; ifNoneExist?: string } }[];
}

const ucum = 'http://unitsofmeasure.org';
const obsCategory = 'http://terminology.hl7.org/CodeSystem/observation-category';
const mrnSystem = 'urn:healthledger:synth:mrn';
const orgSystem = 'urn:healthledger:synth:organization';
const dayMs = 86_400_000;
/** Generated clinical history ends here (fixed, so output never depends on when it runs). */
const historyEndMs = Date.UTC(2026, 0, 1);

const cc = (coding: Coding, text = coding.display) => ({ coding: [coding], text });

function isoDate(ms: number): string {
  return new Date(ms).toISOString().slice(0, 10);
}

function isoDateTime(ms: number): string {
  return new Date(Math.floor(ms / 1000) * 1000).toISOString().replace('.000Z', 'Z');
}

function round(value: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(value * f) / f;
}

const allergyCategory: Record<string, 'food' | 'medication' | 'environment'> = {
  '91936005': 'medication',
  '300913006': 'food',
  '418689008': 'environment',
  '232347008': 'environment',
};

/** Generates patient number `index` of the run seeded with `seed`. */
export function generatePatientBundle(seed: number, index: number): TransactionBundle {
  const rand = new SeededRandom((seed * 1_000_003 + index * 7919) >>> 0);
  const entries: TransactionBundle['entry'] = [];
  const add = (resource: Resource, ifNoneExist?: string): string => {
    const fullUrl = `urn:uuid:${rand.uuid()}`;
    entries.push({ fullUrl, resource, request: { method: 'POST', url: resource.resourceType, ...(ifNoneExist ? { ifNoneExist } : {}) } });
    return fullUrl;
  };

  const gender = rand.chance(0.5) ? 'female' : 'male';
  const given = rand.pick(givenNames[gender]);
  const family = rand.pick(familyNames);
  const birthMs = Date.UTC(rand.int(1940, 2005), rand.int(0, 11), rand.int(1, 28));
  const place = rand.pick(cities);
  const mrn = `MRN-${seed}-${String(index).padStart(6, '0')}`;
  const patient = add({
    resourceType: 'Patient',
    identifier: [{ use: 'usual', type: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v2-0203', code: 'MR', display: 'Medical record number' }] }, system: mrnSystem, value: mrn }],
    active: true,
    name: [{ use: 'official', family, given: [given] }],
    telecom: [{ system: 'phone', value: `555-${rand.int(100, 999)}-${rand.int(1000, 9999)}`, use: 'home' }],
    gender,
    birthDate: isoDate(birthMs),
    address: [{ use: 'home', line: [`${rand.int(1, 999)} ${rand.pick(streets)}`], city: place.city, state: place.state, postalCode: place.postalCode, country: 'US' }],
  });
  const payerId = `payer-${rand.int(1, 3)}`;
  const payer = add({ resourceType: 'Organization', identifier: [{ system: orgSystem, value: payerId }], active: true, name: `Synthetic Health Plan ${payerId.slice(-1)}` }, `identifier=${orgSystem}|${payerId}`);
  const provider = add({ resourceType: 'Organization', identifier: [{ system: orgSystem, value: 'provider-1' }], active: true, name: 'Synthetic Medical Group' }, `identifier=${orgSystem}|provider-1`);
  const coverage = add({
    resourceType: 'Coverage',
    status: 'active',
    beneficiary: { reference: patient },
    payor: [{ reference: payer }],
    relationship: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/subscriber-relationship', code: 'self' }] },
  });

  for (const allergy of allergies) {
    if (!rand.chance(0.2)) continue;
    add({
      resourceType: 'AllergyIntolerance',
      clinicalStatus: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical', code: 'active' }] },
      verificationStatus: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/allergyintolerance-verification', code: 'confirmed' }] },
      type: 'allergy',
      category: [allergyCategory[allergy.code]!],
      criticality: rand.pick(['low', 'high', 'unable-to-assess']),
      code: cc(allergy),
      patient: { reference: patient },
      recordedDate: isoDateTime(birthMs + rand.int(5, 30) * 365 * dayMs),
    });
  }

  const encounters = rand.int(3, 8);
  let t = historyEndMs - rand.int(3, 10) * 365 * dayMs;
  const active = new Set<string>();
  for (let e = 0; e < encounters; e++) {
    t += rand.int(20, 300) * dayMs + rand.int(8, 17) * 3_600_000;
    if (t >= historyEndMs) break;
    const start = t;
    const end = start + rand.int(15, 60) * 60_000;
    const encounter = add({
      resourceType: 'Encounter',
      status: 'finished',
      class: { system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'AMB', display: 'ambulatory' },
      type: [cc(rand.pick(encounterTypes))],
      subject: { reference: patient },
      serviceProvider: { reference: provider },
      period: { start: isoDateTime(start), end: isoDateTime(end) },
    });
    const when = isoDateTime(start + 10 * 60_000);
    const ref = { reference: encounter };
    for (const v of vitals) {
      add({
        resourceType: 'Observation',
        status: 'final',
        category: [{ coding: [{ system: obsCategory, code: 'vital-signs', display: 'Vital signs' }] }],
        code: cc(v.coding),
        subject: { reference: patient },
        encounter: ref,
        effectiveDateTime: when,
        valueQuantity: { value: round(rand.normal(v.mean, v.sd), v.digits), unit: v.unit, system: ucum, code: v.unit },
      });
    }
    const systolic = Math.round(rand.normal(124, 14));
    add({
      resourceType: 'Observation',
      status: 'final',
      category: [{ coding: [{ system: obsCategory, code: 'vital-signs', display: 'Vital signs' }] }],
      code: cc(bloodPressure.panel),
      subject: { reference: patient },
      encounter: ref,
      effectiveDateTime: when,
      component: [
        { code: cc(bloodPressure.systolic), valueQuantity: { value: systolic, unit: 'mm[Hg]', system: ucum, code: 'mm[Hg]' } },
        { code: cc(bloodPressure.diastolic), valueQuantity: { value: Math.round(systolic * 0.65 + rand.normal(0, 5)), unit: 'mm[Hg]', system: ucum, code: 'mm[Hg]' } },
      ],
    });
    if (rand.chance(0.5)) {
      for (const lab of labs) {
        add({
          resourceType: 'Observation',
          status: 'final',
          category: [{ coding: [{ system: obsCategory, code: 'laboratory', display: 'Laboratory' }] }],
          code: cc(lab.coding),
          subject: { reference: patient },
          encounter: ref,
          effectiveDateTime: when,
          issued: isoDateTime(start + 26 * 3_600_000).replace('Z', '.000Z'),
          valueQuantity: { value: round(Math.max(0.01, rand.normal(lab.mean, lab.sd)), lab.digits), unit: lab.unit, system: ucum, code: lab.unit },
        });
      }
    }
    if (rand.chance(0.35)) {
      const condition = rand.pick(conditions);
      if (!active.has(condition.code)) {
        active.add(condition.code);
        add({
          resourceType: 'Condition',
          clinicalStatus: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/condition-clinical', code: 'active' }] },
          verificationStatus: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/condition-ver-status', code: 'confirmed' }] },
          category: [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/condition-category', code: 'encounter-diagnosis', display: 'Encounter Diagnosis' }] }],
          code: cc(condition),
          subject: { reference: patient },
          encounter: ref,
          onsetDateTime: when,
          recordedDate: when,
        });
        const medication = medicationFor[condition.code]!;
        add({
          resourceType: 'MedicationRequest',
          status: 'active',
          intent: 'order',
          medicationCodeableConcept: cc(medication),
          subject: { reference: patient },
          encounter: ref,
          authoredOn: when,
          dosageInstruction: [{ sequence: 1, text: 'Take as directed', timing: { repeat: { frequency: 1, period: 1, periodUnit: 'd' } } }],
        });
      }
    }
    if (rand.chance(0.3)) {
      add({
        resourceType: 'Immunization',
        status: 'completed',
        vaccineCode: cc(rand.pick(vaccines)),
        patient: { reference: patient },
        encounter: ref,
        occurrenceDateTime: when,
        primarySource: true,
      });
    }
    if (rand.chance(0.25)) {
      add({
        resourceType: 'Procedure',
        status: 'completed',
        code: cc(rand.pick(procedures)),
        subject: { reference: patient },
        encounter: ref,
        performedDateTime: when,
      });
    }
    const price = rand.int(80, 400);
    add({
      resourceType: 'Claim',
      status: 'active',
      type: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/claim-type', code: 'professional' }] },
      use: 'claim',
      patient: { reference: patient },
      billablePeriod: { start: isoDateTime(start), end: isoDateTime(end) },
      created: isoDateTime(end),
      provider: { reference: provider },
      priority: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/processpriority', code: 'normal' }] },
      insurance: [{ sequence: 1, focal: true, coverage: { reference: coverage } }],
      item: [{ sequence: 1, productOrService: { coding: [(encounterTypes[0]!)], text: 'Office visit' }, encounter: [ref], net: { value: price, currency: 'USD' } }],
      total: { value: price, currency: 'USD' },
    });
  }
  return { resourceType: 'Bundle', type: 'transaction', entry: entries };
}
