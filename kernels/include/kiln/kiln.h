/* kiln: the whole C ABI. */
#ifndef KILN_KILN_H_
#define KILN_KILN_H_

#include "kiln/attention.h"
#include "kiln/classifier.h"
#include "kiln/core.h"
#include "kiln/embedding.h"
#include "kiln/gelu.h"
#include "kiln/gemm.h"
#include "kiln/layernorm.h"
#include "kiln/optimizer.h"
#include "kiln/rmsnorm.h"
#include "kiln/rope.h"
#include "kiln/softmax.h"
#include "kiln/swiglu.h"

#endif /* KILN_KILN_H_ */
