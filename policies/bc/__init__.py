"""policies/bc"""
