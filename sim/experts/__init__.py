"""sim/experts"""
