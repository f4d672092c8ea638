/**
 * The CLI's HTTP client side: JSON requests to a node, with a node's OperationOutcome turned into one line.
 */

/** An OperationOutcome's issues as one line: the first three, each with its FHIRPath if any. */
export function outcomeSummary(status: number, body: unknown): string {
  const issues = ((body as { issue?: unknown } | null)?.issue ?? []) as { diagnostics?: string; expression?: string[] }[];
  if (!Array.isArray(issues) || issues.length === 0) return `HTTP ${status}`;
  const listed = issues
    .slice(0, 3)
    .map((i) => `${i.expression?.[0] ? `${i.expression[0]}: ` : ''}${i.diagnostics ?? ''}`)
    .join('; ');
  return `HTTP ${status}: ${listed}${issues.length > 3 ? `; and ${issues.length - 3} more` : ''}`;
}

/** A failed request, with the one-line reason. */
export class RequestError extends Error {
  constructor(
    message: string,
    readonly status: number,
  ) {
    super(message);
  }
}

/**
 * Sends a JSON request to `base + path` and returns the parsed JSON answer; throws `RequestError` naming the
 * node's reason on any non-2xx answer, or that the node cannot be reached.
 */
export async function requestJson(
  base: string,
  path: string,
  options: { method?: string; body?: unknown; token?: string; contentType?: string } = {},
): Promise<Record<string, unknown>> {
  const headers: Record<string, string> = { accept: 'application/fhir+json, application/json' };
  if (options.body !== undefined) headers['content-type'] = options.contentType ?? 'application/json';
  if (options.token) headers.authorization = `Bearer ${options.token}`;
  const res = await reach(base, `${base.replace(/\/+$/, '')}${path}`, {
    method: options.method ?? (options.body === undefined ? 'GET' : 'POST'),
    headers,
    ...(options.body === undefined ? {} : { body: typeof options.body === 'string' ? options.body : JSON.stringify(options.body) }),
  });
  const body = (await res.json().catch(() => null)) as Record<string, unknown> | null;
  if (!res.ok) throw new RequestError(outcomeSummary(res.status, body), res.status);
  if (body === null) throw new RequestError(`HTTP ${res.status}: the answer is not JSON`, res.status);
  return body;
}

/** `fetch`, with a node that cannot be reached reported as `RequestError` naming `base`. */
export async function reach(base: string, url: string, init: RequestInit): Promise<Response> {
  try {
    return await fetch(url, init);
  } catch {
    throw new RequestError(`cannot reach ${base}`, 0);
  }
}
