// A small protobuf codec for the subset of onnx.proto this project reads and writes.
//
// Why not a generated codec: we need (a) zero-copy views of multi-hundred-megabyte raw_data
// fields, (b) encoding that streams large tensors to disk without concatenating them, and
// (c) lossless round-trips of exports we only partly understand. Every message keeps the
// fields it does not model in `unknown`, and they are written back verbatim.
//
// proto-types.ts holds the messages, proto-decode.ts and proto-encode.ts the two directions.

export * from './proto-types.ts';
export * from './proto-decode.ts';
export * from './proto-encode.ts';
