"""(being written)"""

QUERIES: dict = {}
MUTATIONS: dict = {}
