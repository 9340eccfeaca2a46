"""prepcodec.export"""
