"""prepcodec.tasks"""
