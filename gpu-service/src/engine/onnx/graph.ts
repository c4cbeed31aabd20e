/**
 * A small builder for ONNX graphs: named values in, nodes, named values out,
 * weights as initializers. `toBytes()` gives a serialized ModelProto that
 * onnxruntime-node's `InferenceSession.create` accepts.
 *
 * @example
 * const g = new GraphBuilder("double");
 * const x = g.input("x", "float32", [1, "n"]);
 * g.output(g.op1("Add", [x, x]), "y", "float32", [1, "n"]);
 * const session = await InferenceSession.create(g.toBytes());
 */
import { closeSync, openSync, writeSync } from "node:fs";
import { create, toBinary } from "@bufbuild/protobuf";
import {
  type AttributeProto,
  AttributeProto_AttributeType,
  AttributeProtoSchema,
  GraphProtoSchema,
  ModelProtoSchema,
  type NodeProto,
  NodeProtoSchema,
  OperatorSetIdProtoSchema,
  StringStringEntryProtoSchema,
  type TensorProto,
  TensorProto_DataLocation,
  TensorProto_DataType,
  TensorProtoSchema,
  TensorShapeProto_DimensionSchema,
  TensorShapeProtoSchema,
  TypeProto_TensorSchema,
  TypeProtoSchema,
  type ValueInfoProto,
  ValueInfoProtoSchema,
} from "@twigserve/proto/onnx/onnx_pb.js";

export type ElemType = "float32" | "float16" | "int32" | "int64" | "uint8";
export type Dim = number | string;

const DTYPES: Record<ElemType, TensorProto_DataType> = {
  float32: TensorProto_DataType.FLOAT,
  float16: TensorProto_DataType.FLOAT16,
  int32: TensorProto_DataType.INT32,
  int64: TensorProto_DataType.INT64,
  uint8: TensorProto_DataType.UINT8,
};

/** Attribute values: numbers are ints unless wrapped with `float()`. */
export type AttrValue = number | string | number[] | { float: number } | { floats: number[] };
export const float = (value: number) => ({ float: value });

function attribute(name: string, value: AttrValue): AttributeProto {
  if (typeof value === "number") {
    if (!Number.isInteger(value))
      throw new TypeError(`attribute ${name}: ${value} is not an int; wrap floats with float()`);
    return create(AttributeProtoSchema, { name, type: AttributeProto_AttributeType.INT, i: BigInt(value) });
  }
  if (typeof value === "string") {
    return create(AttributeProtoSchema, {
      name,
      type: AttributeProto_AttributeType.STRING,
      s: new TextEncoder().encode(value),
    });
  }
  if (Array.isArray(value)) {
    return create(AttributeProtoSchema, { name, type: AttributeProto_AttributeType.INTS, ints: value.map(BigInt) });
  }
  if ("float" in value)
    return create(AttributeProtoSchema, { name, type: AttributeProto_AttributeType.FLOAT, f: value.float });
  return create(AttributeProtoSchema, { name, type: AttributeProto_AttributeType.FLOATS, floats: value.floats });
}

function valueInfo(name: string, type: ElemType, dims: Dim[]): ValueInfoProto {
  return create(ValueInfoProtoSchema, {
    name,
    type: create(TypeProtoSchema, {
      value: {
        case: "tensorType",
        value: create(TypeProto_TensorSchema, {
          elemType: DTYPES[type],
          shape: create(TensorShapeProtoSchema, {
            dim: dims.map((d) =>
              create(TensorShapeProto_DimensionSchema, {
                value: typeof d === "number" ? { case: "dimValue", value: BigInt(d) } : { case: "dimParam", value: d },
              }),
            ),
          }),
        }),
      },
    }),
  });
}

function writeAll(fd: number, bytes: Uint8Array): void {
  for (let done = 0; done < bytes.byteLength; ) done += writeSync(fd, bytes, done, bytes.byteLength - done);
}

export type WeightData = Float32Array | Int32Array | BigInt64Array | Uint8Array | Uint16Array;

export class GraphBuilder {
  private readonly nodes: NodeProto[] = [];
  private readonly initializers: TensorProto[] = [];
  private readonly inputs: ValueInfoProto[] = [];
  private readonly outputs: ValueInfoProto[] = [];
  private counter = 0;
  /** Values renamed to the graph output they became (output()). */
  private readonly aliases = new Map<string, string>();

  constructor(readonly name: string) {}

  /** A fresh value name with a readable prefix. */
  fresh(prefix: string): string {
    return `${prefix}_${this.counter++}`;
  }

  input(name: string, type: ElemType, dims: Dim[]): string {
    this.inputs.push(valueInfo(name, type, dims));
    return name;
  }

  /**
   * Exposes `value` as a graph output called `name`. A value that a node made is renamed where it is
   * made and used (later uses of the old name are translated), so no Identity node sits behind the
   * output: a node costs a few microseconds per run whatever it does. Graph inputs, weights and values
   * already exposed under another name go through an Identity node.
   */
  output(value: string, name: string, type: ElemType, dims: Dim[]): void {
    const current = this.aliases.get(value) ?? value;
    if (current !== name) {
      const producer = this.nodes.find((n) => n.output.includes(current));
      const taken = (n: string) => this.outputs.some((o) => o.name === n);
      if (producer && !taken(current) && !taken(name)) {
        producer.output = producer.output.map((o) => (o === current ? name : o));
        for (const n of this.nodes) n.input = n.input.map((i) => (i === current ? name : i));
        this.aliases.set(value, name);
      } else {
        this.op("Identity", [current], {}, { outputs: [name] });
      }
    }
    this.outputs.push(valueInfo(name, type, dims));
  }

  /** Adds a constant tensor (a weight) and returns its name. */
  weight(prefix: string, dims: number[], data: WeightData, type: ElemType = "float32"): string {
    const name = this.fresh(prefix);
    const count = dims.reduce((a, b) => a * b, 1);
    const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    const expected =
      count * (type === "float32" || type === "int32" ? 4 : type === "int64" ? 8 : type === "float16" ? 2 : 1);
    if (bytes.byteLength !== expected) {
      throw new RangeError(`weight ${name}: ${bytes.byteLength} bytes for dims [${dims}] of ${type}`);
    }
    this.initializers.push(
      create(TensorProtoSchema, { name, dims: dims.map(BigInt), dataType: DTYPES[type], rawData: bytes }),
    );
    return name;
  }

  /** Scalar or small int64 constant (shapes, axes). */
  ints(prefix: string, values: number[]): string {
    return this.weight(prefix, [values.length], BigInt64Array.from(values.map(BigInt)), "int64");
  }

  /** Appends a node and returns its output names. */
  op(
    opType: string,
    inputs: string[],
    attrs: Record<string, AttrValue> = {},
    opts: { domain?: string; outputs?: number | string[] } = {},
  ): string[] {
    const outs =
      typeof opts.outputs === "object"
        ? opts.outputs
        : Array.from({ length: opts.outputs ?? 1 }, () => this.fresh(opType.toLowerCase()));
    this.nodes.push(
      create(NodeProtoSchema, {
        opType,
        domain: opts.domain ?? "",
        input: inputs.map((i) => this.aliases.get(i) ?? i),
        output: outs,
        name: this.fresh(`n_${opType}`),
        attribute: Object.entries(attrs).map(([k, v]) => attribute(k, v)),
      }),
    );
    return outs;
  }

  /** Appends a node with one output and returns that output's name. */
  op1(opType: string, inputs: string[], attrs: Record<string, AttrValue> = {}, opts: { domain?: string } = {}): string {
    return this.op(opType, inputs, attrs, opts)[0];
  }

  /** Bytes of all initializers (the weights). */
  get weightBytes(): number {
    return this.initializers.reduce((a, t) => a + t.rawData.byteLength, 0);
  }

  toBytes(opset = 21): Uint8Array {
    return toBinary(ModelProtoSchema, this.model(this.initializers, opset));
  }

  /**
   * Writes the model as `modelPath` plus one external data file `dataFile` beside it
   * (protobuf cannot hold a message over 2 GB). Initializers of at least `minBytes`
   * go to the data file, 64-byte aligned; smaller ones stay inline.
   */
  saveWithExternalData(modelPath: string, dataPath: string, dataFile: string, minBytes = 1024, opset = 21): void {
    const fd = openSync(dataPath, "w");
    let offset = 0;
    try {
      const tensors = this.initializers.map((t) => {
        if (t.rawData.byteLength < minBytes) return t;
        const pad = (64 - (offset % 64)) % 64;
        if (pad) writeAll(fd, new Uint8Array(pad));
        offset += pad;
        writeAll(fd, t.rawData);
        const entry = (key: string, value: string) => create(StringStringEntryProtoSchema, { key, value });
        const external = create(TensorProtoSchema, {
          name: t.name,
          dims: t.dims,
          dataType: t.dataType,
          dataLocation: TensorProto_DataLocation.EXTERNAL,
          externalData: [
            entry("location", dataFile),
            entry("offset", String(offset)),
            entry("length", String(t.rawData.byteLength)),
          ],
        });
        offset += t.rawData.byteLength;
        return external;
      });
      const bytes = toBinary(ModelProtoSchema, this.model(tensors, opset));
      const modelFd = openSync(modelPath, "w");
      try {
        writeAll(modelFd, bytes);
      } finally {
        closeSync(modelFd);
      }
    } finally {
      closeSync(fd);
    }
  }

  private model(initializers: TensorProto[], opset: number) {
    return create(ModelProtoSchema, {
      irVersion: 10n,
      producerName: "twigserve",
      opsetImport: [
        create(OperatorSetIdProtoSchema, { domain: "", version: BigInt(opset) }),
        create(OperatorSetIdProtoSchema, { domain: "com.microsoft", version: 1n }),
      ],
      graph: create(GraphProtoSchema, {
        name: this.name,
        node: this.nodes,
        initializer: initializers,
        input: this.inputs,
        output: this.outputs,
      }),
    });
  }
}
