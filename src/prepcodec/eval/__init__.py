"""prepcodec.eval"""
