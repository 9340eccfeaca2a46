"""prepcodec.train"""
