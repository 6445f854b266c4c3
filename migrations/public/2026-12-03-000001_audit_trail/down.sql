DROP TABLE audit_checkpoint_heads;
DROP TABLE audit_checkpoints;
DROP TABLE audit_anchors;
DROP TABLE audit_events;
DROP TABLE audit_chains;
