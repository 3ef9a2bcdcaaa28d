"""dexstack: a ROS 2 control stack for learned manipulation policies.

The core package holds the interface contract (topics, types, QoS, rates), the policy
manifest and store, datasets and the CLI. It depends on numpy and the standard library only.
"""

__version__ = "0.1.0"
