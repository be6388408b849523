#ifndef FEDMIX_CSQLITE_SHIM_H
#define FEDMIX_CSQLITE_SHIM_H
#include <sqlite3.h>
#endif
