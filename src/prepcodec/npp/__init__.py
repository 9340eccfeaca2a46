"""prepcodec.npp"""
