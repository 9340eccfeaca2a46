"""prepcodec.codecs"""
