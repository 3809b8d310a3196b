/* The bus's built-in methods (services, stats, ping, reload). */
#ifndef LB_SYSTEM_SERVICE_H
#define LB_SYSTEM_SERVICE_H
void system_service_init(void);
#endif
