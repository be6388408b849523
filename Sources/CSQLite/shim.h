#ifndef FEDMIX_CSQLITE_SHIM_H
#define FEDMIX_CSQLITE_SHIM_H
#include <sqlite3.h>

/* SQLITE_TRANSIENT is a cast macro and does not import into Swift. Binding
   with it makes SQLite copy the bytes, so Swift's temporary buffers may go. */
static inline sqlite3_destructor_type fedmix_sqlite3_transient(void) {
    return SQLITE_TRANSIENT;
}

#endif
