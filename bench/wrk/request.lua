-- One request shape for every scenario, set by the environment of the wrk process:
--   BENCH_METHOD, BENCH_PATH ("{n}" becomes a random number, for distinct keys),
--   BENCH_BODY_FILE (optional), BENCH_HEADERS ("Name: value" lines separated by "\n").
local method = os.getenv("BENCH_METHOD") or "GET"
local path = os.getenv("BENCH_PATH") or "/"
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
  return wrk.format(method, target, headers, body)
end
