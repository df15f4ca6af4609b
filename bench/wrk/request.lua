-- One request shape for every scenario, set by the environment of the wrk process:
--   BENCH_METHOD, BENCH_PATH ("{n}" becomes a random number, for distinct keys; "{k}" a
--   random one of the keys the bench stored: 0000000 to BENCH_KEY_SPACE - 1, seven digits),
--   BENCH_BODY_FILE (optional), BENCH_HEADERS ("Name: value" lines separated by "\n").
local method = os.getenv("BENCH_METHOD") or "GET"
local path = os.getenv("BENCH_PATH") or "/"
local key_space = tonumber(os.getenv("BENCH_KEY_SPACE") or "10000")
local body = nil
local body_file = os.getenv("BENCH_BODY_FILE")
if body_file and body_file ~= "" then
  local file = assert(io.open(body_file, "rb"))
  body = file:read("*a")
  file:close()
end
local headers = {}
for line in string.gmatch(os.getenv("BENCH_HEADERS") or "", "[^\n]+") do
  local name, value = string.match(line, "^([^:]+):%s*(.*)$")
  if name then headers[name] = value end
end

math.randomseed(os.time() + math.floor(os.clock() * 1000000))

request = function()
  local target = string.gsub(path, "{n}", tostring(math.random(1, 1000000)))
  target = string.gsub(target, "{k}", function()
    return string.format("%07d", math.random(0, key_space - 1))
  end)
  return wrk.format(method, target, headers, body)
end
