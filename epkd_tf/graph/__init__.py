"""Channel dependency graph, parameter counting and surgery for functional tf_keras models."""
from epkd_tf.graph.analysis import Block, ChannelGraph, analyze
from epkd_tf.graph.count import ParamCounter, dense_params, group_macs, nonzero_params
from epkd_tf.graph.rules import (RULE_KINDS, RULES, CountTables, Rule, UnsupportedLayerError,
                                 register_rule, unregister_rule)
from epkd_tf.graph.surgery import remove_groups, zero_groups

__all__ = ["Block", "ChannelGraph", "analyze", "ParamCounter", "dense_params", "group_macs",
           "nonzero_params", "UnsupportedLayerError", "remove_groups", "zero_groups",
           "Rule", "CountTables", "RULES", "RULE_KINDS", "register_rule", "unregister_rule"]
