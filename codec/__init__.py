"""Tensors to symbols and back: padding, quantization, exact entropy parameters, constriction coding."""

from semcodec.codec.api import Codec, EncodeResult, decode, decode_tokens, encode

__all__ = ["Codec", "EncodeResult", "decode", "decode_tokens", "encode"]
