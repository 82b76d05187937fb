"""Tensors to symbols and back: padding, quantization, scale tables, constriction coding."""

from semcodec.codec.api import Codec, EncodeResult, decode, decode_tokens, encode

__all__ = ["Codec", "EncodeResult", "decode", "decode_tokens", "encode"]
