/**
 * The node's clients and staff users in one JSON file (`auth.json` in the data directory, mode 0600). A write
 * goes to a temporary file in the same directory, is fsynced and renamed over the old one, so a reader sees
 * the old file or the new one, never half of one. A running node re-reads the file when it changes, so
 * `healthledger client add` and `user add` take effect without a restart. Two writers at the same moment
 * are not serialized (the last rename wins); registering is an administrator's occasional act.
 */
import { closeSync, fsyncSync, openSync, readFileSync, renameSync, statSync, unlinkSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';
import { HlError, newNonce } from '../kernel/index.js';
import { checkClient, checkStaffUser, type AuthClient, type AuthRegistry, type StaffUser } from './auth-registry.js';

interface AuthFile {
  version: 1;
  clients: AuthClient[];
  users: StaffUser[];
}

const empty: AuthFile = { version: 1, clients: [], users: [] };

/** An `AuthRegistry` in a JSON file. */
export class FileAuthRegistry implements AuthRegistry {
  private cached: { stamp: string; data: AuthFile } | undefined;

  constructor(private readonly file: string) {}

  private stampOf(): string | null {
    try {
      const s = statSync(this.file);
      return `${s.ino}:${s.size}:${s.mtimeMs}`;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw err;
    }
  }

  private read(): AuthFile {
    const stamp = this.stampOf();
    if (stamp === null) return empty;
    if (this.cached?.stamp === stamp) return this.cached.data;
    let data: AuthFile;
    try {
      data = JSON.parse(readFileSync(this.file, 'utf8')) as AuthFile;
    } catch {
      throw new HlError('invalid', `${this.file} is not valid JSON`);
    }
    if (data?.version !== 1 || !Array.isArray(data.clients) || !Array.isArray(data.users)) {
      throw new HlError('invalid', `${this.file} is not a Healthledger auth file`);
    }
    this.cached = { stamp, data };
    return data;
  }

  private write(data: AuthFile): void {
    const tmp = `${this.file}.${newNonce()}.tmp`;
    const fd = openSync(tmp, 'wx', 0o600);
    try {
      writeSync(fd, `${JSON.stringify(data, null, 2)}\n`);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    try {
      renameSync(tmp, this.file);
    } catch (err) {
      unlinkSync(tmp);
      throw err;
    }
    const dir = openSync(dirname(this.file), 'r');
    try {
      fsyncSync(dir);
    } finally {
      closeSync(dir);
    }
    this.cached = undefined;
  }

  async client(clientId: string): Promise<AuthClient | undefined> {
    return this.read().clients.find((c) => c.clientId === clientId);
  }

  async user(username: string): Promise<StaffUser | undefined> {
    return this.read().users.find((u) => u.username === username);
  }

  async addClient(client: AuthClient): Promise<void> {
    await checkClient(client);
    const data = this.read();
    if (data.clients.some((c) => c.clientId === client.clientId)) throw new HlError('conflict', `client "${client.clientId}" is already registered`);
    this.write({ ...data, clients: [...data.clients, client] });
  }

  async addUser(user: StaffUser): Promise<void> {
    checkStaffUser(user);
    const data = this.read();
    if (data.users.some((u) => u.username === user.username)) throw new HlError('conflict', `user "${user.username}" already exists`);
    this.write({ ...data, users: [...data.users, user] });
  }
}
