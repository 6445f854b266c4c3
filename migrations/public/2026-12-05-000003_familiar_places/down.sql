DROP TABLE familiar_networks;
DROP TABLE familiar_devices;
