/**
 * Codes used by the generator: real LOINC, SNOMED CT, RxNorm, CVX and UCUM codes with their display text.
 * Synthetic people only: the names are common given and family names, combined at random.
 */

export const givenNames = {
  female: ['Maria', 'Emma', 'Olivia', 'Ava', 'Sofia', 'Amara', 'Hana', 'Ingrid', 'Leila', 'Chloe', 'Grace', 'Noor', 'Elena', 'Yuki', 'Fatima'],
  male: ['James', 'Liam', 'Noah', 'Mateo', 'Omar', 'Kenji', 'Lucas', 'Ethan', 'Arjun', 'Samuel', 'Tomas', 'Daniel', 'Felix', 'Kwame', 'Jonas'],
} as const;

export const familyNames = [
  'Smith', 'García', 'Nguyen', 'Okafor', 'Müller', 'Rossi', 'Kowalski', 'Hansen', 'Tanaka', 'Silva',
  'Johnson', 'Patel', 'Kim', 'Haddad', 'Novak', 'Dubois', 'Andersson', 'Mensah', 'Lopez', 'Brown',
] as const;

export const cities = [
  { city: 'Springfield', state: 'MA', postalCode: '01101' },
  { city: 'Worcester', state: 'MA', postalCode: '01601' },
  { city: 'Lowell', state: 'MA', postalCode: '01850' },
  { city: 'Cambridge', state: 'MA', postalCode: '02139' },
  { city: 'Quincy', state: 'MA', postalCode: '02169' },
] as const;

export const streets = ['Maple Street', 'Oak Avenue', 'Elm Road', 'Cedar Lane', 'Harbor Way', 'Mill Street', 'Park Drive'] as const;

export interface Coding {
  system: string;
  code: string;
  display: string;
}

const loinc = 'http://loinc.org';
const snomed = 'http://snomed.info/sct';
const rxnorm = 'http://www.nlm.nih.gov/research/umls/rxnorm';
const cvx = 'http://hl7.org/fhir/sid/cvx';

/** Vital signs: LOINC code, UCUM unit, and a plausible adult distribution. */
export const vitals = [
  { coding: { system: loinc, code: '8302-2', display: 'Body Height' }, unit: 'cm', mean: 170, sd: 10, digits: 1 },
  { coding: { system: loinc, code: '29463-7', display: 'Body Weight' }, unit: 'kg', mean: 78, sd: 15, digits: 1 },
  { coding: { system: loinc, code: '8867-4', display: 'Heart rate' }, unit: '/min', mean: 74, sd: 10, digits: 0 },
  { coding: { system: loinc, code: '9279-1', display: 'Respiratory rate' }, unit: '/min', mean: 15, sd: 2, digits: 0 },
  { coding: { system: loinc, code: '8310-5', display: 'Body temperature' }, unit: 'Cel', mean: 36.8, sd: 0.3, digits: 1 },
] as const;

/** Laboratory results (category laboratory). */
export const labs = [
  { coding: { system: loinc, code: '2339-0', display: 'Glucose [Mass/volume] in Blood' }, unit: 'mg/dL', mean: 95, sd: 15, digits: 0 },
  { coding: { system: loinc, code: '4548-4', display: 'Hemoglobin A1c/Hemoglobin.total in Blood' }, unit: '%', mean: 5.7, sd: 0.8, digits: 1 },
  { coding: { system: loinc, code: '2093-3', display: 'Cholesterol [Mass/volume] in Serum or Plasma' }, unit: 'mg/dL', mean: 190, sd: 30, digits: 0 },
  { coding: { system: loinc, code: '38483-4', display: 'Creatinine [Mass/volume] in Blood' }, unit: 'mg/dL', mean: 1.0, sd: 0.2, digits: 2 },
] as const;

export const bloodPressure = {
  panel: { system: loinc, code: '85354-9', display: 'Blood pressure panel with all children optional' },
  systolic: { system: loinc, code: '8480-6', display: 'Systolic blood pressure' },
  diastolic: { system: loinc, code: '8462-4', display: 'Diastolic blood pressure' },
} as const;

export const conditions: readonly Coding[] = [
  { system: snomed, code: '44054006', display: 'Diabetes mellitus type 2' },
  { system: snomed, code: '38341003', display: 'Hypertensive disorder' },
  { system: snomed, code: '195967001', display: 'Asthma' },
  { system: snomed, code: '55822004', display: 'Hyperlipidemia' },
  { system: snomed, code: '40055000', display: 'Chronic sinusitis' },
  { system: snomed, code: '444814009', display: 'Viral sinusitis' },
  { system: snomed, code: '35489007', display: 'Depressive disorder' },
];

/** Medication for a condition code (RxNorm). */
export const medicationFor: Record<string, Coding> = {
  '44054006': { system: rxnorm, code: '860975', display: '24 HR Metformin hydrochloride 500 MG Extended Release Oral Tablet' },
  '38341003': { system: rxnorm, code: '314076', display: 'lisinopril 10 MG Oral Tablet' },
  '195967001': { system: rxnorm, code: '895994', display: '120 ACTUAT Fluticasone propionate 0.044 MG/ACTUAT Metered Dose Inhaler' },
  '55822004': { system: rxnorm, code: '259255', display: 'atorvastatin 80 MG Oral Tablet' },
  '40055000': { system: rxnorm, code: '308182', display: 'Amoxicillin 250 MG Oral Capsule' },
  '444814009': { system: rxnorm, code: '313782', display: 'Acetaminophen 325 MG Oral Tablet' },
  '35489007': { system: rxnorm, code: '312938', display: 'sertraline 100 MG Oral Tablet' },
};

export const allergies: readonly Coding[] = [
  { system: snomed, code: '91936005', display: 'Allergy to penicillin' },
  { system: snomed, code: '300913006', display: 'Shellfish allergy' },
  { system: snomed, code: '418689008', display: 'Allergy to grass pollen' },
  { system: snomed, code: '232347008', display: 'Dander (animal) allergy' },
];

export const vaccines: readonly Coding[] = [
  { system: cvx, code: '140', display: 'Influenza, seasonal, injectable, preservative free' },
  { system: cvx, code: '113', display: 'Td (adult) preservative free' },
  { system: cvx, code: '208', display: 'SARS-COV-2 (COVID-19) vaccine, mRNA, spike protein, LNP, preservative free, 30 mcg/0.3mL dose' },
  { system: cvx, code: '133', display: 'Pneumococcal conjugate PCV 13' },
];

export const procedures: readonly Coding[] = [
  { system: snomed, code: '430193006', display: 'Medication Reconciliation (procedure)' },
  { system: snomed, code: '73761001', display: 'Colonoscopy' },
  { system: snomed, code: '180325003', display: 'Electrical cardioversion' },
  { system: snomed, code: '710824005', display: 'Assessment of health and social care needs (procedure)' },
];

export const encounterTypes: readonly Coding[] = [
  { system: snomed, code: '185349003', display: 'Encounter for check up (procedure)' },
  { system: snomed, code: '185345009', display: 'Encounter for symptom' },
  { system: snomed, code: '390906007', display: 'Follow-up encounter' },
];
