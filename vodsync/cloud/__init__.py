"""The only place that speaks to VOD and OSS: typed calls over aliyunsdkvod and oss2."""
