DROP TABLE assistant_deployment;
