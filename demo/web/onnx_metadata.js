// The metadata properties of an ONNX file (ModelProto.metadata_props),
// read straight from its protobuf bytes: onnxruntime-web runs a model but
// does not expose them. Only the top level of ModelProto is walked; the
// graph (field 7) is skipped by its length.

const IR_VERSION = 1;  // ModelProto field numbers (onnx/onnx.proto)
const GRAPH = 7;
const METADATA_PROPS = 14;
const VARINT = 0, FIXED64 = 1, LENGTH_DELIMITED = 2, FIXED32 = 5;

class ProtobufReader {
  constructor(bytes, start = 0, end = bytes.length) {
    this.bytes = bytes;
    this.pos = start;
    this.end = end;
  }

  done() {
    return this.pos >= this.end;
  }

  varint() {
    // Multiplication, not shifts: lengths may pass 2^31.
    let value = 0;
    for (let scale = 1; scale < 2 ** 64; scale *= 128) {
      if (this.pos >= this.end) throw new Error('truncated varint');
      const byte = this.bytes[this.pos++];
      value += (byte & 0x7f) * scale;
      if (byte < 0x80) return value;
    }
    throw new Error('varint longer than 10 bytes');
  }

  // [field number, wire type] of the next field.
  tag() {
    const tag = this.varint();
    const field = Math.floor(tag / 8);
    if (field < 1) throw new Error('field number 0');
    return [field, tag % 8];
  }

  // [start, end) of a length-delimited field's payload.
  span() {
    const length = this.varint();
    const start = this.pos;
    if (start + length > this.end) throw new Error('field past the end');
    this.pos += length;
    return [start, start + length];
  }

  skip(wireType) {
    const sizes = {[FIXED64]: 8, [FIXED32]: 4};
    if (wireType === VARINT) this.varint();
    else if (wireType === LENGTH_DELIMITED) this.span();
    else if (wireType in sizes) {
      this.pos += sizes[wireType];
      if (this.pos > this.end) throw new Error('field past the end');
    } else throw new Error(`wire type ${wireType}`);
  }
}

const utf8 = new TextDecoder('utf-8', {fatal: true});

// StringStringEntryProto {key = 1; value = 2} → [key, value].
function readEntry(bytes, [start, end]) {
  const reader = new ProtobufReader(bytes, start, end);
  const entry = ['', ''];
  while (!reader.done()) {
    const [field, wireType] = reader.tag();
    if ((field === 1 || field === 2) && wireType === LENGTH_DELIMITED) {
      const [from, to] = reader.span();
      entry[field - 1] = utf8.decode(bytes.subarray(from, to));
    } else reader.skip(wireType);
  }
  return entry;
}

// The metadata properties of the ONNX file ``bytes`` (a Uint8Array) as a
// Map of strings, or null when the bytes are not an ONNX model (not
// protobuf, or no IR version and graph at the top level).
export function readOnnxMetadata(bytes) {
  const reader = new ProtobufReader(bytes);
  const props = new Map();
  const seen = new Set();
  try {
    while (!reader.done()) {
      const [field, wireType] = reader.tag();
      seen.add(`${field}:${wireType}`);
      if (field === METADATA_PROPS && wireType === LENGTH_DELIMITED) {
        const [key, value] = readEntry(bytes, reader.span());
        props.set(key, value);
      } else reader.skip(wireType);
    }
  } catch (err) {
    return null;
  }
  const isModel = seen.has(`${IR_VERSION}:${VARINT}`) &&
      seen.has(`${GRAPH}:${LENGTH_DELIMITED}`);
  return isModel ? props : null;
}
