DROP TABLE workspace_creations;
