/**
 * Browser bundles with esbuild: the library (`dist/templora.js`, the public API of mod.ts as one
 * ES module), the writing page (`dist/web/`), and the bundles the browser tests load.
 *
 *   deno task build:web     writes dist/templora.js and dist/web/ (index.html, app.js, style.css,
 *                           and models/stories260K/ for a static deployment)
 *
 * Imports are resolved as Deno resolves them: relative files as they are; `npm:` specifiers and
 * the bare names of deno.json's "imports" from Deno's npm cache (packages are cached on first
 * use). Node built-ins are not available in a browser: a bundle that reaches one fails to build
 * unless `aliases` names a browser module for it.
 */
import * as esbuild from "esbuild";
import { dirname } from "node:path";
import { fileURLToPath } from "node:url";

/** The repository root. */
export const ROOT = fileURLToPath(new URL("../", import.meta.url));
const root = (relative: string) => fileURLToPath(new URL(`../${relative}`, import.meta.url));

/** What {@link bundle} builds. */
export interface BundleOptions {
  /** The entry module (a path), or `contents` of one resolved from `resolveDir`. */
  entry: string | { contents: string; resolveDir: string; name: string };
  /** Output file; without it the bundle is returned as text. */
  outfile?: string;
  /** Module specifiers (node:assert, ...) bundled from these files instead. */
  aliases?: Readonly<Record<string, string>>;
  /** Files (absolute paths) left out and imported at run time from these URLs instead. */
  externals?: Readonly<Record<string, string>>;
  /** esbuild `define`: expressions replaced at build time. */
  define?: Readonly<Record<string, string>>;
  /** Minify (default false: readable stack traces). */
  minify?: boolean;
}

/** Builds one ES module for browsers; returns its text. */
export async function bundle(options: BundleOptions): Promise<string> {
  const entry = options.entry;
  const result = await esbuild.build({
    ...(typeof entry === "string" ? { entryPoints: [entry] } : {
      stdin: {
        contents: entry.contents,
        resolveDir: entry.resolveDir,
        sourcefile: entry.name,
        loader: "ts",
      },
    }),
    bundle: true,
    format: "esm",
    platform: "browser",
    target: "es2022",
    write: false,
    outfile: options.outfile ?? "bundle.js",
    minify: options.minify ?? false,
    sourcemap: false,
    legalComments: "none",
    logLevel: "silent",
    define: options.define ? { ...options.define } : undefined,
    plugins: [
      ...(options.externals ? [externalFiles(options.externals)] : []),
      denoResolver(options.aliases ?? {}),
    ],
  });
  const text = result.outputFiles[0].text;
  if (options.outfile) {
    await Deno.mkdir(dirname(options.outfile), { recursive: true });
    await Deno.writeTextFile(options.outfile, text);
  }
  return text;
}

/** Stops esbuild's service (call once at the end of a process that bundled). */
export async function stopBundler(): Promise<void> {
  await esbuild.stop();
}

/** deno.json's "imports" (bare name -> specifier). */
function importMap(): Record<string, string> {
  const config = JSON.parse(Deno.readTextFileSync(root("deno.json")));
  return config.imports ?? {};
}

/** "npm:@scope/name@1.2.3/sub/path" -> its parts. */
function parseNpm(spec: string): { name: string; version: string; subpath: string } {
  const body = spec.slice(4).replace(/^\//, "");
  const m = body.match(/^((?:@[^/]+\/)?[^@/]+)(?:@([^/]+))?(\/.*)?$/);
  if (!m) throw new Error(`cannot parse the npm specifier ${spec}`);
  return { name: m[1], version: m[2] ?? "", subpath: m[3] ? `.${m[3]}` : "." };
}

let npmCacheDir: string | undefined;

/** Deno's npm cache folder for registry.npmjs.org. */
async function npmCache(): Promise<string> {
  if (npmCacheDir) return npmCacheDir;
  const out = await new Deno.Command(Deno.execPath(), { args: ["info", "--json"] }).output();
  const info = JSON.parse(new TextDecoder().decode(out.stdout));
  npmCacheDir = `${info.npmCache}/registry.npmjs.org`;
  return npmCacheDir;
}

function compareVersions(a: string, b: string): number {
  const pa = a.split(/[.-]/).map((x) => Number(x));
  const pb = b.split(/[.-]/).map((x) => Number(x));
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const d = (pa[i] || 0) - (pb[i] || 0);
    if (d !== 0) return d;
  }
  return 0;
}

/** The cached package folder of name@version (an exact version, or the newest cached one). */
async function packageDir(name: string, version: string): Promise<string> {
  const base = `${await npmCache()}/${name}`;
  const find = () => {
    try {
      const versions = [...Deno.readDirSync(base)].filter((e) => e.isDirectory).map((e) => e.name)
        .filter((v) => version === "" || v === version || v.startsWith(`${version}.`))
        .sort(compareVersions);
      return versions.length ? `${base}/${versions[versions.length - 1]}` : undefined;
    } catch {
      return undefined;
    }
  };
  let dir = find();
  if (!dir) {
    // Not cached yet: let Deno fetch it.
    const spec = `npm:${name}${version ? `@${version}` : ""}`;
    const out = await new Deno.Command(Deno.execPath(), { args: ["cache", spec] }).output();
    dir = find();
    if (!dir) {
      throw new Error(
        `npm package ${spec} is not in Deno's cache and could not be fetched: ${
          new TextDecoder().decode(out.stderr).trim()
        }`,
      );
    }
  }
  return dir;
}

/** The file a package's "exports" (or "module"/"main") names for `subpath`, for a browser. */
function packageEntry(dir: string, subpath: string): string {
  const pkg = JSON.parse(Deno.readTextFileSync(`${dir}/package.json`));
  const conditions = ["browser", "import", "module", "default"];
  const pick = (target: unknown): string | undefined => {
    if (typeof target === "string") return target;
    if (Array.isArray(target)) return target.map(pick).find(Boolean);
    if (target && typeof target === "object") {
      for (const c of conditions) {
        const t = (target as Record<string, unknown>)[c];
        const got = t === undefined ? undefined : pick(t);
        if (got) return got;
      }
    }
    return undefined;
  };
  let file: string | undefined;
  if (pkg.exports !== undefined) {
    const exports = typeof pkg.exports === "string" || Array.isArray(pkg.exports) ||
        !Object.keys(pkg.exports).some((k) => k.startsWith("."))
      ? { ".": pkg.exports }
      : pkg.exports;
    file = pick(exports[subpath]);
  }
  if (!file && subpath === ".") {
    file = (typeof pkg.browser === "string" ? pkg.browser : undefined) ?? pkg.module ?? pkg.main ??
      "index.js";
  }
  if (!file) file = subpath;
  return `${dir}/${file.replace(/^\.\//, "")}`;
}

/** Imports of the given files become imports of the given URLs (not bundled). */
function externalFiles(externals: Readonly<Record<string, string>>): esbuild.Plugin {
  return {
    name: "templora-external-files",
    setup(build) {
      build.onResolve({ filter: /^\./ }, (args) => {
        const target = externals[fileURLToPath(new URL(args.path, `file://${args.resolveDir}/`))];
        return target ? { path: target, external: true } : undefined;
      });
    },
  };
}

/** Resolves npm: specifiers, deno.json's bare names and aliased built-ins. */
function denoResolver(aliases: Readonly<Record<string, string>>): esbuild.Plugin {
  const map = importMap();
  return {
    name: "templora-deno-resolver",
    setup(build) {
      build.onResolve({ filter: /^[^./]/ }, async (args) => {
        if (args.path.startsWith("/")) return undefined;
        const alias = aliases[args.path];
        if (alias) return { path: alias };
        let spec = args.path;
        const bare = Object.keys(map).find((k) => spec === k || spec.startsWith(`${k}/`));
        if (bare) spec = map[bare] + spec.slice(bare.length);
        if (spec.startsWith("node:")) {
          return {
            errors: [{
              text: `${spec} is not available in a browser (imported by ${args.importer})`,
            }],
          };
        }
        if (!spec.startsWith("npm:")) {
          return {
            errors: [{
              text:
                `${spec} is neither npm: nor in deno.json's imports (imported by ${args.importer})`,
            }],
          };
        }
        const { name, version, subpath } = parseNpm(spec);
        return { path: packageEntry(await packageDir(name, version), subpath) };
      });
    },
  };
}

/** The writing page's files, built: index.html, style.css and app.js. */
export async function buildPage(): Promise<Map<string, string>> {
  const page = root("examples/web/");
  const files = new Map<string, string>();
  files.set("index.html", await Deno.readTextFile(`${page}index.html`));
  files.set("style.css", await Deno.readTextFile(`${page}style.css`));
  files.set("app.js", await bundle({ entry: `${page}app.ts` }));
  return files;
}

/** The library bundle: mod.ts's public API as one ES module. */
export function buildLibrary(outfile?: string): Promise<string> {
  return bundle({ entry: root("mod.ts"), outfile });
}

if (import.meta.main) {
  const dist = root("dist/");
  await buildLibrary(`${dist}templora.js`);
  const web = `${dist}web/`;
  await Deno.mkdir(`${web}models/stories260K`, { recursive: true });
  for (const [name, text] of await buildPage()) await Deno.writeTextFile(`${web}${name}`, text);
  for (const name of ["stories260K.bin", "tok512.bin", "LICENSE"]) {
    await Deno.copyFile(root(`models/stories260K/${name}`), `${web}models/stories260K/${name}`);
  }
  await stopBundler();
  console.log("wrote dist/templora.js and dist/web/ (serve that folder with any static server)");
}
