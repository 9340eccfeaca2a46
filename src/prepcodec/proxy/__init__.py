"""prepcodec.proxy"""
