"""prepcodec.data"""
