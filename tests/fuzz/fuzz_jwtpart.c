/* Fuzz target: core/jwtpart.h, the unverified base64url decoder of a JWT's
 * header and claims (the tokens plugin reads the header with it before
 * any key is used; liblexbus reads the claims to route a token), fed any
 * bytes as a token.  It must never read past the string, never crash, and
 * return only objects. */
#include "config.h"
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "jwtpart.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *tok = malloc(size + 1);
    if (!tok) return 0;
    memcpy(tok, data, size);
    tok[size] = 0;
    for (int part = 0; part < 3; part++) {
        json_t *j = jwt_part_json(tok, part);
        if (j && !json_is_object(j)) abort();
        json_decref(j);
    }
    free(tok);
    return 0;
}
