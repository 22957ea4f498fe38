package main

import "nielsgpt/models/demo"

// demoGGUF is what `--model demo` loads in serve and chat.
var demoGGUF = demo.GGUF
