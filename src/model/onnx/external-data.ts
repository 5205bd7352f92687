// ONNX external data: large exports keep tensor bytes in side files (`model.onnx_data`, ...)
// named by TensorProto.external_data {location, offset, length}, relative to the model file's
// folder. We read such tensors for the weight metrics, and when the instrumented graph is written
// elsewhere (the cache) the side files must sit next to it under the same relative names.

import {
  closeSync,
  copyFileSync,
  existsSync,
  fstatSync,
  linkSync,
  mkdirSync,
  openSync,
  readSync,
} from 'node:fs';
import { dirname, isAbsolute, join, normalize, sep } from 'node:path';
import { ModelLoadError } from '../../errors.ts';
import type { ExternalReader } from './graph-query.ts';
import type { GraphProto, ModelProto, TensorProto } from './proto.ts';

export interface ExternalRef {
  location: string;
  offset: number;
  /** Bytes to read; undefined means "to the end of the file". */
  length: number | undefined;
}

export function isExternal(t: TensorProto): boolean {
  return t.dataLocation === 1 || (t.externalData?.length ?? 0) > 0;
}

export function externalRef(t: TensorProto): ExternalRef | undefined {
  if (!isExternal(t)) return undefined;
  const entry = (key: string) => t.externalData?.find((e) => e.key === key)?.value;
  const location = entry('location');
  if (!location) return undefined;
  const length = entry('length');
  return {
    location,
    offset: Number(entry('offset') ?? 0),
    length: length === undefined ? undefined : Number(length),
  };
}

/**
 * A location must stay inside the model's folder: a graph is untrusted input and must not make
 * us read (or link) arbitrary files.
 */
function checkedLocation(location: string, modelFile: string): string {
  const rel = normalize(location);
  if (isAbsolute(rel) || rel === '..' || rel.startsWith(`..${sep}`)) {
    throw new ModelLoadError(
      modelFile,
      `external data location "${location}" points outside the model's folder`,
    );
  }
  return rel;
}

/** Reads external tensors of the graph stored in `modelFile`, relative to its folder. */
export function externalReader(modelFile: string): ExternalReader {
  const baseDir = dirname(modelFile);
  return (t) => {
    const ref = externalRef(t);
    if (!ref)
      throw new ModelLoadError(modelFile, `tensor "${t.name}" is marked external but names no location`);
    const file = join(baseDir, checkedLocation(ref.location, modelFile));
    if (!existsSync(file)) throw new ModelLoadError(file, `external data of tensor "${t.name}" not found`);
    const fd = openSync(file, 'r');
    try {
      const size = fstatSync(fd).size;
      const length = ref.length ?? size - ref.offset;
      if (ref.offset + length > size) {
        throw new ModelLoadError(
          file,
          `truncated: tensor "${t.name}" needs bytes ${ref.offset}..${ref.offset + length}, file has ${size}`,
        );
      }
      const out = new Uint8Array(length);
      let done = 0;
      while (done < length) {
        const n = readSync(fd, out, done, length - done, ref.offset + done);
        if (n === 0) throw new ModelLoadError(file, `truncated while reading tensor "${t.name}"`);
        done += n;
      }
      return out;
    } finally {
      closeSync(fd);
    }
  };
}

/** Every external-data file the model refers to (relative locations, each once), subgraphs included. */
export function externalDataFiles(model: ModelProto, modelFile: string): string[] {
  const files = new Set<string>();
  const visitTensor = (t: TensorProto | undefined) => {
    const ref = t && externalRef(t);
    if (ref) files.add(checkedLocation(ref.location, modelFile));
  };
  const visitGraph = (g: GraphProto) => {
    g.initializer.forEach(visitTensor);
    for (const node of g.node) {
      for (const a of node.attribute) {
        visitTensor(a.t);
        if (a.g) visitGraph(a.g);
      }
    }
  };
  visitGraph(model.graph);
  return [...files];
}

/**
 * Makes each external-data file available under `toDir` with the same relative name: a hard
 * link when both folders share a filesystem (instant, no extra space), a copy otherwise.
 * Symlinks are avoided on purpose: onnxruntime refuses external data that resolves outside
 * the model's folder.
 */
export function placeExternalDataFiles(fromModelFile: string, toDir: string, locations: string[]): void {
  const fromDir = dirname(fromModelFile);
  for (const location of locations) {
    const source = join(fromDir, location);
    if (!existsSync(source))
      throw new ModelLoadError(source, 'external data file referenced by the graph not found');
    const target = join(toDir, location);
    mkdirSync(dirname(target), { recursive: true });
    try {
      linkSync(source, target);
    } catch {
      copyFileSync(source, target);
    }
  }
}
