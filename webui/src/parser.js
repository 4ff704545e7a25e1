/**
 * The Socket.IO packet parser, with room for records channels that have many fields.
 *
 * A records message carries one binary attachment per field (docs/protocol.md §4.3), and
 * socket.io-parser ≥ 4.2.7 refuses packets with more than 10 attachments by default
 * ("too many attachments" → the client disconnects with "parse error" and loops). The
 * bridge is trusted (same origin, our token), so we allow many more.
 */
import { Encoder, Decoder as BaseDecoder, protocol, PacketType } from "socket.io-parser";

export const MAX_ATTACHMENTS = 10000;

export class Decoder extends BaseDecoder {
  constructor(opts) {
    super({ ...(typeof opts === "function" ? { reviver: opts } : opts || {}), maxAttachments: MAX_ATTACHMENTS });
  }
}

export { Encoder, protocol, PacketType };
