/** Runs the example commands the way `deno task` does, for their tests. */

const ROOT = new URL("..", import.meta.url);

/** What a command printed and its exit code. */
export interface CommandOutput {
  code: number;
  stdout: string;
  stderr: string;
}

/** The Deno arguments of a task in deno.json ("novel": run -A examples/novel.ts). */
async function taskArgs(task: string): Promise<string[]> {
  const config = JSON.parse(await Deno.readTextFile(new URL("deno.json", ROOT)));
  const command: unknown = config.tasks?.[task];
  if (typeof command !== "string" || !command.startsWith("deno ")) {
    throw new Error(`deno.json has no task "${task}" that runs deno`);
  }
  return command.split(/\s+/).slice(1);
}

/**
 * The command `deno task <task> <args>` runs, from the repository root, with `env` added to (or,
 * with undefined values, removed from) the environment; spawn it for signals and streaming.
 */
export async function taskCommand(
  task: string,
  args: string[],
  env: Record<string, string | undefined> = {},
): Promise<Deno.Command> {
  const childEnv: Record<string, string> = {};
  for (const [key, value] of Object.entries({ ...Deno.env.toObject(), ...env })) {
    if (value !== undefined) childEnv[key] = value;
  }
  return new Deno.Command(Deno.execPath(), {
    args: [...await taskArgs(task), ...args],
    cwd: ROOT,
    env: childEnv,
    clearEnv: true,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  });
}

/** Runs `deno task <task> <args>` (see {@link taskCommand}) to the end. */
export async function runTask(
  task: string,
  args: string[],
  env: Record<string, string | undefined> = {},
): Promise<CommandOutput> {
  const out = await (await taskCommand(task, args, env)).output();
  const decode = (bytes: Uint8Array) => new TextDecoder().decode(bytes);
  return { code: out.code, stdout: decode(out.stdout), stderr: decode(out.stderr) };
}
