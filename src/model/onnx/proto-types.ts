// The onnx.proto messages this project models (see proto.ts for why the codec is our own).

export const DataType = {
  FLOAT: 1,
  UINT8: 2,
  INT8: 3,
  UINT16: 4,
  INT16: 5,
  INT32: 6,
  INT64: 7,
  STRING: 8,
  BOOL: 9,
  FLOAT16: 10,
  DOUBLE: 11,
  UINT32: 12,
  UINT64: 13,
  BFLOAT16: 16,
} as const;

export const AttrType = {
  FLOAT: 1,
  INT: 2,
  STRING: 3,
  TENSOR: 4,
  GRAPH: 5,
  FLOATS: 6,
  INTS: 7,
  STRINGS: 8,
} as const;

/** A field we do not model, kept as its encoded bytes (tag included). */
export interface UnknownField {
  bytes: Uint8Array;
}

export interface StringEntry {
  key: string;
  value: string;
}

export interface TensorProto {
  name: string;
  dataType: number;
  dims: number[];
  rawData?: Uint8Array;
  floatData?: number[];
  int32Data?: number[];
  int64Data?: number[];
  doubleData?: number[];
  externalData?: StringEntry[];
  /** 1 = EXTERNAL */
  dataLocation?: number;
  unknown?: UnknownField[];
}

export interface AttributeProto {
  name: string;
  type: number;
  f?: number;
  i?: number;
  s?: Uint8Array;
  t?: TensorProto;
  g?: GraphProto;
  floats?: number[];
  ints?: number[];
  strings?: Uint8Array[];
  unknown?: UnknownField[];
}

export interface NodeProto {
  input: string[];
  output: string[];
  name: string;
  opType: string;
  domain: string;
  attribute: AttributeProto[];
  unknown?: UnknownField[];
}

export interface Dim {
  value?: number;
  param?: string;
}

export interface ValueInfoProto {
  name: string;
  /** Tensor element type; undefined when the value info has no tensor type. */
  elemType?: number;
  /** Shape; undefined when unknown rank. */
  shape?: Dim[];
  unknown?: UnknownField[];
}

export interface GraphProto {
  name: string;
  node: NodeProto[];
  initializer: TensorProto[];
  input: ValueInfoProto[];
  output: ValueInfoProto[];
  valueInfo: ValueInfoProto[];
  unknown?: UnknownField[];
}

export interface OpsetId {
  domain: string;
  version: number;
}

export interface ModelProto {
  irVersion: number;
  opsetImport: OpsetId[];
  producerName: string;
  producerVersion: string;
  graph: GraphProto;
  metadataProps: StringEntry[];
  unknown?: UnknownField[];
}
